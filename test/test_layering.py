"""The layer rules of docs DESIGN section 1, checked on the source with ``ast`` (nothing is imported).

Layers, dependencies pointing down: model -> geometry -> engine -> mapping -> ros; eval, train and
cli may import everything but ros. Only ``vggt_ros/ros/`` imports rclpy or ROS messages.
Every import counts, top-level or inside a function (lazy imports are still dependencies).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vggt_ros"

# layer -> the vggt_ros layers it may import (itself included; every layer may read the root
# package's ``__version__``).
ALLOWED: dict[str, set[str]] = {
    "model": {"model"},
    "geometry": {"geometry"},
    "engine": {"engine", "model", "geometry"},
    "mapping": {"mapping", "geometry"},
    "ros": {"ros", "model", "geometry", "engine", "mapping", "msg", "srv"},
    "eval": {"eval", "cli", "model", "geometry", "engine", "mapping"},
    # Training sits beside eval: it reads eval's data (renderer, bag readers, window metrics)
    # and nothing but the CLI imports it.
    "train": {"train", "model", "geometry", "engine", "mapping", "eval"},
    "cli": {"cli", "eval", "train", "model", "geometry", "engine", "mapping"},
    "root": {"root"},
}
# Third-party packages the model may use besides the standard library.
MODEL_THIRD_PARTY = {"torch", "numpy", "safetensors", "huggingface_hub"}
# ROS client libraries and generated interfaces that are not named *_msgs / *_srvs.
ROS_PACKAGES = {
    "rclpy",
    "rosidl_runtime_py",
    "rosidl_parser",
    "builtin_interfaces",
    "rcl_interfaces",
    "tf2_ros",
    "tf2_py",
    "message_filters",
    "cv_bridge",
    "image_geometry",
    "launch",
    "launch_ros",
    "ament_index_python",
}
# Known exceptions: (module path relative to vggt_ros/, imported module) -> why it is allowed.
# Each must still exist (a stale entry fails), so the list only shrinks.
# The node demo publishes the bundled synthetic scene (vggt_ros/eval/synthetic.py): a developer
# entry point that combines the ROS layer with the ground-truth renderer, like the CLI does.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("ros/demo.py", "vggt_ros.eval.synthetic"): "demo_node main(): the published demo sequence",
    ("ros/demo.py", "vggt_ros.eval.accuracy"): "demo_node main(): accuracy table of the demo sequence",
    ("ros/latency_bench.py", "vggt_ros.eval.soak"): "latency_bench run(): reads the replayed bag's frames",
}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) == 1:
        return "cli" if rel.name == "cli.py" else "root"
    return rel.parts[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if node.module is None:
                # ``from . import x``: each name may be a submodule.
                out.extend((node.lineno, f"{name}.{alias.name}") for alias in node.names)
            else:
                out.append((node.lineno, name))
    return out


def is_ros(name: str) -> bool:
    top = name.split(".")[0]
    return (
        top in ROS_PACKAGES
        or top.endswith(("_msgs", "_srvs", "_interfaces"))
        or name.startswith(("vggt_ros.msg", "vggt_ros.srv"))
    )


def violations(files: list[Path]) -> list[str]:
    found, used_exceptions = [], set()
    for path in files:
        layer = layer_of(path)
        rel = path.relative_to(PACKAGE).as_posix()
        for line, name in imports_of(path):
            where = f"vggt_ros/{rel}:{line} imports {name}"
            key = (rel, ".".join(name.split(".")[:3]))
            if key in EXCEPTIONS:
                used_exceptions.add(key)
                continue
            if is_ros(name) and layer != "ros":
                found.append(f"{where}: only vggt_ros/ros/ may import ROS")
                continue
            top = name.split(".")[0]
            if top == "vggt_ros":
                parts = name.split(".")
                target = "root" if len(parts) == 1 else parts[1]
                if target != "root" and target not in ALLOWED[layer]:
                    found.append(f"{where}: layer {layer} may import only {sorted(ALLOWED[layer])}")
            elif layer == "model" and top not in sys.stdlib_module_names and top not in MODEL_THIRD_PARTY:
                allowed = sorted(MODEL_THIRD_PARTY)
                found.append(f"{where}: the model may use only the standard library and {allowed}")
    if files == SOURCES:
        for key in set(EXCEPTIONS) - used_exceptions:
            found.append(f"stale exception {key}: remove it from EXCEPTIONS")
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_sources_found() -> None:
    layers = {layer_of(p) for p in SOURCES}
    assert {"model", "geometry", "engine", "mapping", "ros", "eval", "train", "cli"} <= layers


def test_layer_rules_hold() -> None:
    problems = violations(SOURCES)
    assert not problems, "layer rule violations (docs DESIGN section 1):\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("rel", "source", "expected"),
    [
        ("ros/x.py", "def f():\n    from vggt_ros.eval.bundle import KeyframeBundle\n", "layer ros"),
        ("mapping/x.py", "from vggt_ros.engine import Predictor\n", "layer mapping"),
        ("mapping/x.py", "import rclpy\n", "only vggt_ros/ros/"),
        ("engine/x.py", "from sensor_msgs.msg import Image\n", "only vggt_ros/ros/"),
        ("eval/x.py", "from vggt_ros.ros import conversions\n", "layer eval"),
        ("geometry/x.py", "from ..mapping import Frame\n", "layer geometry"),
        ("model/x.py", "import cv2\n", "the model may use only"),
        ("model/x.py", "from vggt_ros.geometry import camera\n", "layer model"),
    ],
)
def test_checker_catches(tmp_path, monkeypatch, rel: str, source: str, expected: str) -> None:
    """The checker itself: each snippet, placed in a fake package, is reported."""
    fake = tmp_path / "vggt_ros"
    path = fake / rel
    path.parent.mkdir(parents=True)
    path.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    problems = violations([path])
    assert len(problems) == 1 and expected in problems[0], problems


def test_checker_accepts_allowed_imports(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "vggt_ros"
    cases = {
        "ros/x.py": "import rclpy\nfrom vggt_ros.mapping import Frame\nfrom vggt_ros.msg import Tracks\n",
        "eval/x.py": "from vggt_ros.mapping.export import write_colmap\nimport rosbags\n",
        "engine/x.py": "from . import runner\nfrom vggt_ros.model.vggt import VGGT\nimport cv2\n",
        "model/x.py": "import torch\nimport hashlib\nfrom .layers import Block\n",
    }
    paths = []
    for rel, source in cases.items():
        path = fake / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        paths.append(path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert violations(paths) == []


def import_graph(files: list[Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in the file, deferred imports
    included). ``from pkg import name`` is an edge to the submodule ``pkg.name`` when there is
    one, else to ``pkg``."""
    modules = {module_name(p): p for p in files}

    def resolve(name: str) -> str | None:
        """The longest known module that ``name`` starts with."""
        parts = name.split(".")
        for k in range(len(parts), 0, -1):
            if ".".join(parts[:k]) in modules:
                return ".".join(parts[:k])
        return None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [resolve(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - (node.level - 1)] if node.level else []
                origin = ".".join(base + ([node.module] if node.module else []))
                targets = [resolve(f"{origin}.{alias.name}") for alias in node.names]
            else:
                continue
            graph[module].update(t for t in targets if t is not None and t != module)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each once (depth-first search over the graph)."""
    cycles, seen = [], set()
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    cycles.append(cycle + [nxt])
            elif state.get(nxt) is None:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycles() -> None:
    """No module of the package imports itself back through others, deferred imports included
    (the engine's runner/backends and the node/lifecycle node used to)."""
    cycles = find_cycles(import_graph(SOURCES))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_deferred_cycle(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "vggt_ros"
    (fake / "engine").mkdir(parents=True)
    (fake / "engine" / "__init__.py").write_text("")
    (fake / "engine" / "a.py").write_text("from vggt_ros.engine.b import X\n")
    (fake / "engine" / "b.py").write_text("def f():\n    from vggt_ros.engine import a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    files = sorted(fake.rglob("*.py"))
    monkeypatch.setattr(sys.modules[__name__], "SOURCES", files)
    cycles = find_cycles(import_graph(files))
    assert len(cycles) == 1 and set(cycles[0]) == {"vggt_ros.engine.a", "vggt_ros.engine.b"}
