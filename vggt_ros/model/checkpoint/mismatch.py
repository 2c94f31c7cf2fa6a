"""Comparing a checkpoint's keys and shapes with a model's, and the readable grouped report.

:func:`compare_shapes` gives a :class:`KeyDiff`; :func:`format_mismatch` turns it into the message
of :class:`~vggt_ros.model.checkpoint.errors.CheckpointMismatchError` (subtrees collapsed to
``prefix.*``, block indices to ranges) and :func:`mismatch_hints` guesses at the likely cause.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from vggt_ros.model.checkpoint.common import Shape, _human_count

# Heads that a config can switch off, by state-dict prefix.
_HEAD_FLAGS = {
    "camera_head": "enable_camera",
    "depth_head": "enable_depth",
    "point_head": "enable_point",
    "track_head": "enable_track",
}


@dataclass
class KeyDiff:
    """How a checkpoint's keys and shapes differ from a model's (keys in model / file order)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)  # key, file shape, model shape
    expected: dict[str, Shape] = field(default_factory=dict, repr=False)
    found: dict[str, Shape] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def compare_shapes(expected: Mapping[str, Shape], found: Mapping[str, Shape]) -> KeyDiff:
    """Compare a model's ``{key: shape}`` with a checkpoint's."""
    expected = {k: tuple(v) for k, v in expected.items()}
    found = {k: tuple(v) for k, v in found.items()}
    return KeyDiff(
        missing=[k for k in expected if k not in found],
        unexpected=[k for k in found if k not in expected],
        mismatched=[(k, found[k], expected[k]) for k in expected if k in found and found[k] != expected[k]],
        expected=expected,
        found=found,
    )


def _prefix_counts(keys: Iterable[str]) -> Counter[str]:
    """How many keys lie under each proper dotted prefix (``a.b.c`` counts for ``a`` and ``a.b``)."""
    counts: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        for depth in range(1, len(parts)):
            counts[".".join(parts[:depth])] += 1
    return counts


def _collapse_subtrees(keys: Sequence[str], universe: Iterable[str]) -> list[tuple[str, int]]:
    """Replace keys by ``prefix.*`` where every key of ``universe`` under that prefix is listed.

    Returns ``(item, number of keys it stands for)`` in first-appearance order.
    """
    total = _prefix_counts(universe)
    listed = _prefix_counts(keys)
    items: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        item = key
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            if total[prefix] >= 2 and listed[prefix] == total[prefix]:
                item = prefix + ".*"
                break
        items[item] = items.get(item, 0) + 1
    return list(items.items())


def _ranges(numbers: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 7, 9, 10]`` -> ``0..3,7,9..10``."""
    values = sorted(set(numbers))
    spans: list[str] = []
    start = prev = values[0]
    for n in values[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        spans.append(str(start) if start == prev else f"{start}..{prev}")
        if n is not None:
            start = prev = n
    return ",".join(spans)


def _collapse_indices(
    items: Sequence[tuple[str, int]], notes: Mapping[str, str] | None = None
) -> list[tuple[str, int]]:
    """Merge items that differ only in numeric path components: ``blocks.0.x`` .. ``blocks.23.x``
    becomes ``blocks.0..23.x``. Items with different ``notes`` (e.g. shapes) are kept apart."""
    notes = notes or {}
    groups: dict[tuple[tuple[str | None, ...], str], list[tuple[list[str], int]]] = {}
    for item, count in items:
        parts = item.split(".")
        template = tuple(None if p.isdigit() else p for p in parts)
        groups.setdefault((template, notes.get(item, "")), []).append((parts, count))
    merged: list[tuple[str, int]] = []
    for (template, note), members in groups.items():
        rendered = [
            p if p is not None else _ranges(int(parts[i]) for parts, _ in members)
            for i, p in enumerate(template)
        ]
        text = ".".join(rendered) + (f": {note}" if note else "")
        merged.append((text, sum(count for _, count in members)))
    return merged


def summarize_keys(
    keys: Sequence[str],
    universe: Iterable[str] | None = None,
    *,
    notes: Mapping[str, str] | None = None,
    limit: int = 8,
) -> list[str]:
    """Readable lines for a list of state-dict keys, grouped and truncated.

    Whole subtrees of ``universe`` (the model's or file's full key set) collapse to ``prefix.*``,
    block indices collapse to ranges (``frame_blocks.0..23.attn.qkv.weight``), and past ``limit``
    lines the rest is counted (``... and 57 more keys``).
    """
    if not keys:
        return []
    items = (
        _collapse_subtrees(keys, universe) if universe is not None and not notes else [(k, 1) for k in keys]
    )
    merged = _collapse_indices(items, notes)
    lines = [text if count == 1 else f"{text}  ({count} keys)" for text, count in merged[:limit]]
    rest = sum(count for _, count in merged[limit:])
    if rest:
        lines.append(f"... and {rest} more key{'s' if rest > 1 else ''}")
    return lines


def _fmt_shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def format_mismatch(diff: KeyDiff, *, source: str, target: str, hints: Sequence[str] = ()) -> str:
    """The message of :class:`CheckpointMismatchError`."""
    counts = []
    if diff.missing:
        counts.append(f"{len(diff.missing)} missing")
    if diff.unexpected:
        counts.append(f"{len(diff.unexpected)} unexpected")
    if diff.mismatched:
        counts.append(f"{len(diff.mismatched)} with another shape")
    lines = [
        f"checkpoint {source} does not fit {target} ({len(diff.expected)} tensors expected, "
        f"{len(diff.found)} in the checkpoint): {', '.join(counts) or 'no difference'}"
    ]
    sections = [
        ("missing from the checkpoint", summarize_keys(diff.missing, diff.expected)),
        ("unexpected in the checkpoint", summarize_keys(diff.unexpected, diff.found)),
        (
            "shape differs (checkpoint vs model)",
            summarize_keys(
                [k for k, _, _ in diff.mismatched],
                notes={k: f"{_fmt_shape(f)} vs {_fmt_shape(m)}" for k, f, m in diff.mismatched},
            ),
        ),
    ]
    for title, body in sections:
        if body:
            lines.append(f"  {title}:")
            lines.extend(f"    {line}" for line in body)
    lines.extend(f"  hint: {hint}" for hint in hints)
    return "\n".join(lines)


def mismatch_hints(diff: KeyDiff) -> list[str]:
    """Guesses at why a checkpoint does not fit, from the key sets alone."""
    hints: list[str] = []
    if diff.found and not set(diff.found) & set(diff.expected):
        hints.append(_no_overlap_hint(diff))
    else:
        hints.extend(_head_hints(diff))
    expected_total = sum(math.prod(s) for s in diff.expected.values())
    found_total = sum(math.prod(s) for s in diff.found.values())
    if diff.mismatched:
        hints.append(
            f"the checkpoint holds {_human_count(found_total)} values, the model "
            f"{_human_count(expected_total)}: it was probably trained with another configuration (config=...)"
        )
    return hints


def _no_overlap_hint(diff: KeyDiff) -> str:
    """No key matches: look for an extra (or stripped) leading component on every key."""
    firsts = Counter(k.split(".", 1)[0] for k in diff.found)
    prefix, count = firsts.most_common(1)[0]
    stripped = {k.split(".", 1)[-1] for k in diff.found if k.startswith(prefix + ".")}
    if count == len(diff.found) and stripped & set(diff.expected):
        return f"every checkpoint key starts with '{prefix}.': it was saved from a wrapper around the model"
    return "no checkpoint key names a tensor of this model: is it a VGGT checkpoint at all?"


def _head_hints(diff: KeyDiff) -> list[str]:
    """A whole head absent from the file, or present in the file but disabled in the config."""
    hints = []
    missing_tops = _whole_top_levels(diff.missing, diff.expected)
    extra_tops = _whole_top_levels(diff.unexpected, diff.found)
    for top in missing_tops:
        flag = _HEAD_FLAGS.get(top)
        fix = f"a config with {flag}=False, e.g. get_config(...).replace({flag}=False), or " if flag else ""
        hints.append(f"the checkpoint has no '{top}' weights at all; use {fix}strict=False to keep it random")
    for top in extra_tops:
        flag = _HEAD_FLAGS.get(top)
        why = f" (the config sets {flag}=False)" if flag else ""
        hints.append(f"the checkpoint carries '{top}' weights that the model has no place for{why}")
    return hints


def _whole_top_levels(keys: Sequence[str], universe: Mapping[str, Shape]) -> list[str]:
    listed = Counter(k.split(".", 1)[0] for k in keys)
    total = Counter(k.split(".", 1)[0] for k in universe)
    return [top for top, n in listed.items() if n == total[top]]
