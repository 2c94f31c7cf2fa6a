"""How long a thread that alternates Python with GIL-free calls waits for the GIL while another
thread runs Python, at several switch intervals (vggt_ros/mapping/interpreter.py).

    python benchmarks/gil_switch_interval.py [--intervals 5 1 0.5] [--steps 50]

Each step is what the node's worker does between two GIL-free calls, in small: a few numpy
operations on 300 values, then an OpenCV blur of a 200x200 image (the GIL is released inside).
Prints the median of eleven runs alone and with one thread running a Python loop (started and
running before the first timed run).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import cv2
import numpy as np


def _steps(count: int, image: np.ndarray) -> float:
    start = time.perf_counter()
    for _ in range(count):
        values = np.random.rand(300)
        values.sum()
        np.median(values)
        cv2.GaussianBlur(image, (5, 5), 1)
    return (time.perf_counter() - start) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=float, nargs="+", default=[5.0, 1.0, 0.5], help="ms")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    image = np.random.rand(200, 200).astype(np.float32)
    stop, running = threading.Event(), threading.Event()

    def python_loop() -> None:
        total = 0
        running.set()
        while not stop.is_set():
            for i in range(1000):
                total += i

    original = sys.getswitchinterval()
    try:
        for interval in args.intervals:
            sys.setswitchinterval(interval / 1e3)
            alone = float(np.median([_steps(args.steps, image) for _ in range(11)]))
            stop.clear()
            running.clear()
            other = threading.Thread(target=python_loop)
            other.start()
            running.wait()
            try:
                contended = float(np.median([_steps(args.steps, image) for _ in range(11)]))
            finally:
                stop.set()
                other.join()
            print(
                f"switch interval {interval:g} ms: alone {alone:.1f} ms, "
                f"with a Python thread {contended:.1f} ms"
            )
    finally:
        sys.setswitchinterval(original)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
