"""TensorRT engine cache: keys, file names, round trips, and refusal of bad entries (no TensorRT)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from vggt_ros.engine.engine_cache import EngineCache, EngineKey, FrameProfile, default_cache_dir

PROFILE = FrameProfile(min_frames=1, opt_frames=8, max_frames=32, height=350, width=518)
KEY = EngineKey(
    section="aggregator",
    weights_identity="sha256:abc",
    gpu_name="Orin",
    compute_capability="8.7",
    tensorrt_version="10.3.0",
    precision="fp16",
    profile=PROFILE,
    variant="schema=1",
)


def _variants() -> list[EngineKey]:
    """KEY with exactly one field (or one profile field) changed, for every field."""
    changed = {
        "section": "depth",
        "weights_identity": "sha256:abd",
        "gpu_name": "NVIDIA H100",
        "compute_capability": "9.0",
        "tensorrt_version": "10.3.1",
        "precision": "bf16",
        "variant": "schema=2",
    }
    keys = [dataclasses.replace(KEY, **{name: value}) for name, value in changed.items()]
    profile_changes = {"min_frames": 2, "opt_frames": 4, "max_frames": 16, "height": 392, "width": 504}
    keys += [
        dataclasses.replace(KEY, profile=dataclasses.replace(PROFILE, **{k: v}))
        for k, v in profile_changes.items()
    ]
    assert len(keys) == len(dataclasses.fields(EngineKey)) - 1 + len(dataclasses.fields(FrameProfile))
    return keys


def test_every_field_changes_the_digest_and_filename():
    names = {KEY.filename()} | {k.filename() for k in _variants()}
    digests = {KEY.digest()} | {k.digest() for k in _variants()}
    assert len(names) == len(digests) == 1 + len(_variants())


def test_filename_is_stable_and_readable():
    rebuilt = EngineKey.from_dict(json.loads(json.dumps(KEY.to_dict())))
    assert rebuilt == KEY and rebuilt.filename() == KEY.filename()
    # Pinned: an accidental change of the key's encoding would silently orphan every cache.
    assert KEY.digest() == "b2c30138012155b0a48787f4bec91cc31316a1a9d1973b6107c82cb8528a0fdc"
    assert KEY.filename() == "aggregator-fp16-b2c30138012155b0"


def test_store_lookup_round_trip(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    assert cache.lookup(KEY) is None
    path = cache.store(KEY, b"serialized engine")
    assert path == tmp_path / "engines" / f"{KEY.filename()}.engine"
    assert cache.lookup(KEY) == b"serialized engine"
    meta = json.loads(cache.metadata_path(KEY).read_text())
    assert meta["key"] == KEY.to_dict() and meta["size"] == len(b"serialized engine")
    assert list(cache.entries()) == [KEY]
    assert sorted(p.name for p in cache.root.iterdir()) == sorted(
        [f"{KEY.filename()}.engine", f"{KEY.filename()}.json"]
    ), "no temporary files left behind"


def test_other_keys_miss(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"x")
    for other in _variants():
        assert cache.lookup(other) is None
    assert cache.lookup(KEY) == b"x"


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupt_engine_is_discarded_and_rebuilt(tmp_path, damage):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"good engine bytes")
    path = cache.engine_path(KEY)
    data = path.read_bytes()
    path.write_bytes({"flip": b"G" + data[1:], "truncate": data[:5], "empty": b""}[damage])
    assert cache.lookup(KEY) is None
    assert not path.exists() and not cache.metadata_path(KEY).exists()
    builds = []
    engine, cached = cache.get_or_build(KEY, lambda: builds.append(1) or b"rebuilt")
    assert (engine, cached, builds) == (b"rebuilt", False, [1])
    assert cache.lookup(KEY) == b"rebuilt"


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["key"].update(tensorrt_version="9.9"),
        lambda m: m["key"]["profile"].update(max_frames=64),
        lambda m: m.update(format=0),
        lambda m: m.pop("sha256"),
        lambda m: m["key"].pop("gpu_name"),
    ],
)
def test_mismatched_metadata_is_rejected(tmp_path, edit):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"engine")
    meta = json.loads(cache.metadata_path(KEY).read_text())
    edit(meta)
    cache.metadata_path(KEY).write_text(json.dumps(meta))
    assert cache.lookup(KEY) is None
    assert not cache.engine_path(KEY).exists()


def test_unreadable_metadata_and_orphan_engine_are_rejected(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"engine")
    cache.metadata_path(KEY).write_text("{not json")
    assert cache.lookup(KEY) is None
    cache.root.mkdir(exist_ok=True)
    cache.engine_path(KEY).write_bytes(b"engine written, metadata never")
    assert cache.lookup(KEY) is None
    assert not cache.engine_path(KEY).exists()


def test_get_or_build_builds_once(tmp_path):
    cache = EngineCache(tmp_path)
    calls = []

    def build() -> bytes:
        calls.append(1)
        return b"engine"

    assert cache.get_or_build(KEY, build) == (b"engine", False)
    assert cache.get_or_build(KEY, build) == (b"engine", True)
    assert len(calls) == 1


def test_failed_build_stores_nothing(tmp_path):
    cache = EngineCache(tmp_path)

    def build() -> bytes:
        raise RuntimeError("builder ran out of memory")

    with pytest.raises(RuntimeError):
        cache.get_or_build(KEY, build)
    assert cache.lookup(KEY) is None and list(cache.entries()) == []


def test_store_replaces_an_existing_entry(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"old")
    cache.store(KEY, b"new")
    assert cache.lookup(KEY) == b"new"


def test_invalidate(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"engine")
    cache.invalidate(KEY)
    cache.invalidate(KEY)  # idempotent
    assert cache.lookup(KEY) is None


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VGGT_ROS_ENGINE_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("VGGT_ROS_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "vggt_ros" / "tensorrt"
    assert EngineCache().root == default_cache_dir()


def test_profile_validation_and_clamp():
    with pytest.raises(ValueError):
        FrameProfile(4, 2, 8, 350, 518)
    with pytest.raises(ValueError):
        FrameProfile(0, 1, 8, 350, 518)
    with pytest.raises(ValueError):
        FrameProfile(1, 1, 8, 0, 518)
    assert PROFILE.clamp(8) == FrameProfile(1, 8, 8, 350, 518)
    assert PROFILE.clamp(4) == FrameProfile(1, 4, 4, 350, 518)
