"""Training batches drawn in a separate process (``vggt-ros train --render-process``).

The default prefetcher renders the next batch on a thread of the training process. Rendering
a batch of procedural windows is mostly Python and kernel launches (146 ms for 32 eight-frame
windows of 140x182 on the H200, docs/training.md), and so is the compact model's training step:
on one interpreter the two take turns on the GIL and overlap little. This module runs the data
source in a process of its own (``spawn``: the trainer holds CUDA and threads, which a forked
child must not inherit), on the same device, one step ahead.

Batches cross the process boundary as CPU tensors in shared memory and are copied to the
training device by the trainer (about 110 MB for 32 such windows, images and depth in float32:
a few milliseconds of copy against the render's 146 ms): simpler and safer than CUDA IPC, whose
tensors the producer must keep alive until the consumer is done with them. A batch is a pure
function of its window indices, so the batches, and hence the run, are the same as with the
thread.
"""

from __future__ import annotations

import os
import queue
import traceback
from typing import Any

import torch
import torch.multiprocessing as mp

from vggt_ros.train.targets import WindowBatch

# How long either side waits on its queue before checking that the other is still alive.
_POLL_SECONDS = 5.0


class RenderProcessError(RuntimeError):
    """The batch process failed (its traceback is in the message) or died."""


def _serve(source: Any, device: str, requests: Any, results: Any, parent: int) -> None:
    """Worker loop: ``(key, indices)`` requests in, ``(key, fields, error)`` results out.

    ``parent`` is the trainer's pid (taken there: the trainer may die while this one starts)."""
    torch.set_num_threads(1)  # the trainer uses the other cores
    try:
        while True:
            try:
                item = requests.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if os.getppid() != parent:  # the trainer was killed: do not linger as an orphan
                    return
                continue
            if item is None:
                return
            key, indices = item
            try:
                batch = source.windows(indices, device)
                fields = {
                    name: value.cpu() if isinstance(value, torch.Tensor) else value
                    for name, value in vars(batch).items()
                }
                results.put((key, fields, None))
            except Exception:  # reported to the trainer, which raises it there
                results.put((key, None, traceback.format_exc()))
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


class RenderProcess:
    """One worker process that draws batches ahead of the training loop, in request order.

    Args:
        source: the training data source (anything with ``windows(indices, device)`` returning
            a :class:`~vggt_ros.train.targets.WindowBatch`); it is pickled into the worker.
        device: where the worker renders (the training device) and where batches are returned.
    """

    def __init__(self, source: Any, device: torch.device) -> None:
        self.device = torch.device(device)
        context = mp.get_context("spawn")
        self.requests = context.Queue()
        self.results = context.Queue()
        self.pending: list[Any] = []  # keys requested and not yet taken, oldest first
        self.process = context.Process(
            target=_serve,
            args=(source, str(self.device), self.requests, self.results, os.getpid()),
            name="vggt-ros-render",
            daemon=True,
        )
        self.process.start()

    def request(self, key: Any, indices: range) -> None:
        """Ask for the windows ``indices``; :meth:`take` returns them under ``key``."""
        self.requests.put((key, indices))
        self.pending.append(key)

    def take(self, key: Any) -> WindowBatch:
        """The batch requested under ``key`` (earlier requests not taken are dropped)."""
        if key not in self.pending:
            raise KeyError(f"no batch was requested under {key!r}")
        while True:
            try:
                got, fields, error = self.results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self.process.is_alive():
                    raise RenderProcessError(
                        f"the batch process exited (code {self.process.exitcode}) without a batch"
                    ) from None
                continue
            self.pending.remove(got)
            if error is not None:
                raise RenderProcessError(f"the batch process failed on request {got!r}:\n{error}")
            if got == key:
                return WindowBatch(**{name: self._to_device(value) for name, value in fields.items()})

    def _to_device(self, value: Any) -> Any:
        return value.to(self.device, non_blocking=True) if isinstance(value, torch.Tensor) else value

    def close(self) -> None:
        """Stop the worker (pending requests are dropped)."""
        if self.process.is_alive():
            self.requests.put(None)
            self.process.join(timeout=10.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.pending.clear()
