"""Checkpoint loading, saving and their error messages (CPU, small models)."""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
from pathlib import Path

import pytest
import torch

from vggt_ros.model import checkpoint as ckpt
from vggt_ros.model.checkpoint import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    HubCheckpointError,
    UnsafeCheckpointError,
    WeightsInfo,
    choose_checkpoint_file,
    convert_checkpoint,
    file_identity,
    load_model,
    load_state_dict_file,
    load_weights_into,
    parse_repo_source,
    save_checkpoint,
    summarize_keys,
)
from vggt_ros.model.config import get_config
from vggt_ros.model.vggt import VGGT

TINY = "vggt-tiny"


@pytest.fixture(scope="module")
def tiny() -> VGGT:
    torch.manual_seed(0)
    return VGGT(TINY).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(1, 3, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def reference(tiny: VGGT, images: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {k: v for k, v in tiny(images).items() if isinstance(v, torch.Tensor)}


@pytest.fixture()
def tiny_file(tiny: VGGT, tmp_path: Path) -> Path:
    return save_checkpoint(tiny, tmp_path / "tiny.safetensors")


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


def assert_same_outputs(
    model: torch.nn.Module, reference: dict[str, torch.Tensor], images: torch.Tensor
) -> None:
    with torch.no_grad():
        out = model(images)
    for key, value in reference.items():
        assert torch.equal(out[key], value), key


def no_meta_tensors(model: torch.nn.Module) -> bool:
    return not any(t.is_meta for t in [*model.parameters(), *model.buffers()])


# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------
def test_safetensors_round_trip(tiny: VGGT, tiny_file: Path, images: torch.Tensor, reference: dict) -> None:
    model, info = load_model(tiny_file, config=TINY)
    assert_same_state(tiny, model)
    assert_same_outputs(model, reference, images)
    assert not model.training
    assert no_meta_tensors(model)
    # The normalisation constants are not in the file: they must be refilled, not left empty.
    assert torch.equal(model.aggregator.image_mean, tiny.aggregator.image_mean)
    assert torch.equal(model.aggregator.image_std, tiny.aggregator.image_std)
    assert info.trained and info.format == "safetensors"
    assert info.path == str(tiny_file) and info.config == TINY
    assert info.num_parameters == sum(p.numel() for p in tiny.parameters())
    assert (info.dtype, info.device) == ("float32", "cpu")
    assert re.fullmatch(r"[0-9a-f]{16}", info.identity) and info.identity_method == "fast"
    line = str(info)
    assert "\n" not in line and str(tiny_file) in line and info.identity in line and TINY in line
    assert json.dumps(info.to_dict())  # diagnostics can serialise it


def _wrap(state: dict[str, torch.Tensor], how: str) -> object:
    if how == "plain":
        return state
    if how == "model":
        return {"model": state, "epoch": 3, "optimizer": {"lr": 0.1}}
    if how == "state_dict":
        return {"state_dict": state, "global_step": 10}
    if how == "ddp":
        return {"model": {f"module.{k}": v for k, v in state.items()}}
    if how == "ddp_plain":
        return {f"module.{k}": v for k, v in state.items()}
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["plain", "model", "state_dict", "ddp", "ddp_plain"])
def test_torch_round_trip(
    tiny: VGGT, tmp_path: Path, images: torch.Tensor, reference: dict, how: str
) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(_wrap(tiny.state_dict(), how), path)
    model, info = load_model(path, config=TINY)
    assert info.format == "torch"
    assert_same_state(tiny, model)
    if how == "plain":  # the same state gives the same outputs; one forward pass is enough
        assert_same_outputs(model, reference, images)
    assert no_meta_tensors(model)


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".weights"])
def test_other_suffixes_are_read_by_content(tiny: VGGT, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"tiny{suffix}"
    torch.save(tiny.state_dict(), path)
    model, _ = load_model(path, config=TINY)
    assert_same_state(tiny, model)


def test_legacy_torch_format(tiny: VGGT, tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(tiny.state_dict(), path, _use_new_zipfile_serialization=False)
    model, _ = load_model(path, config=TINY)
    assert_same_state(tiny, model)


def test_directory_source_picks_the_weights(tiny: VGGT, tmp_path: Path) -> None:
    save_checkpoint(tiny, tmp_path / "model.safetensors")
    (tmp_path / "README.md").write_text("weights")
    (tmp_path / "config.json").write_text("{}")
    model, info = load_model(tmp_path, config=TINY)
    assert info.path == str(tmp_path / "model.safetensors")
    assert_same_state(tiny, model)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_dtype_conversion(tiny: VGGT, tmp_path: Path, dtype: torch.dtype, fmt: str) -> None:
    path = tmp_path / f"tiny.{fmt}"
    if fmt == "safetensors":
        save_checkpoint(tiny, path)
    else:
        torch.save(tiny.state_dict(), path)
    model, info = load_model(path, config=TINY, dtype=dtype)
    assert info.dtype == str(dtype).removeprefix("torch.")
    reference = tiny.state_dict()
    for key, value in model.state_dict().items():
        assert value.dtype == dtype, key
        assert torch.equal(value, reference[key].to(dtype)), key  # equal up to the rounding
    # Buffers follow, as with model.to(dtype).
    assert model.aggregator.image_mean.dtype == dtype
    assert no_meta_tensors(model)


def test_low_level_functions(tiny: VGGT, tiny_file: Path) -> None:
    state = load_state_dict_file(tiny_file, dtype=torch.bfloat16)
    assert {v.dtype for v in state.values()} == {torch.bfloat16}
    with torch.device("meta"):
        model = VGGT(TINY)
    diff = load_weights_into(model, state)
    assert diff.ok and no_meta_tensors(model)
    # assign=True: the model adopts the loaded tensors instead of copying them (one copy in memory).
    for name, param in model.named_parameters():
        assert param.data_ptr() == state[name].data_ptr(), name


def test_untrained_model() -> None:
    model, info = load_model(None, config=TINY)
    assert not info.trained and info.format == "untrained" and info.path is None
    assert "UNTRAINED" in str(info)
    assert no_meta_tensors(model) and not model.training
    assert info.num_parameters == sum(p.numel() for p in model.parameters())


def test_untrained_weights_are_the_same_every_run_and_leave_the_random_state_alone() -> None:
    """An untrained model is drawn from a fixed seed (reports and baselines reproduce: before, each
    `vggt-ros eval --untrained` ran a different network), and building it does not move the
    caller's random stream."""
    torch.manual_seed(123)
    expected_next = torch.rand(4)
    torch.manual_seed(123)
    first, _ = load_model(None, config=TINY)
    assert torch.equal(torch.rand(4), expected_next)
    torch.manual_seed(7)  # another global state: the same weights
    second, _ = load_model(None, config=TINY)
    a, b = first.state_dict(), second.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(
        a["aggregator.patch_embed.patch_embed.proj.weight"],
        torch.zeros_like(a["aggregator.patch_embed.patch_embed.proj.weight"]),
    )


def test_not_strict_keeps_missing_tensors_initialised(tiny: VGGT, tmp_path: Path) -> None:
    state = {k: v for k, v in tiny.state_dict().items() if not k.startswith("track_head.")}
    state["extra.weight"] = torch.ones(2)
    path = save_checkpoint(state, tmp_path / "partial.safetensors")
    model, info = load_model(path, config=TINY, strict=False)
    assert no_meta_tensors(model)
    assert info.missing_keys and all(k.startswith("track_head.") for k in info.missing_keys)
    assert info.unexpected_keys == ("extra.weight",)
    assert "NOT STRICT" in str(info)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)


# ----------------------------------------------------------------------------------------------
# Unsafe pickles
# ----------------------------------------------------------------------------------------------
class _RunsCommand:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def _touch(marker: Path) -> _RunsCommand:
    return _RunsCommand(f"touch {shlex.quote(str(marker))}")


@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_is_refused_and_not_run(tiny: VGGT, tmp_path: Path, container: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"model": tiny.state_dict(), "hook": _touch(marker)}
    if container == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=4))

    with pytest.raises(UnsafeCheckpointError, match="refused") as err:
        load_model(path, config=TINY)
    assert str(path) in str(err.value)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        load_state_dict_file(path)
    assert not marker.exists()


def test_malicious_payload_is_live(tmp_path: Path) -> None:
    """The payload above really runs when unpickled unsafely (so the test above can fail)."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_touch(marker)))
    assert marker.exists()


# ----------------------------------------------------------------------------------------------
# Mismatch reports
# ----------------------------------------------------------------------------------------------
def test_mismatch_message_names_missing_unexpected_and_shapes(tiny: VGGT, tmp_path: Path) -> None:
    state = dict(tiny.state_dict())
    dropped = [k for k in state if "frame_blocks" in k and k.endswith("attn.qkv.weight")]
    for key in dropped + [k for k in state if k.startswith("track_head.")]:
        del state[key]
    state["extra_head.weight"] = torch.zeros(3)
    state["aggregator.patch_embed.pos_embed"] = torch.zeros(1, 5, 64)
    path = save_checkpoint(state, tmp_path / "bad.safetensors")

    with pytest.raises(CheckpointMismatchError) as err:
        load_model(path, config=TINY)
    message = str(err.value)
    assert "aggregator.frame_blocks.0..3.attn.qkv.weight" in message  # block indices collapsed
    assert "track_head.*" in message  # whole subtree collapsed
    assert "extra_head.weight" in message
    assert "aggregator.patch_embed.pos_embed: [1, 5, 64] vs [1, 1370, 64]" in message
    assert "enable_track=False" in message  # hint: the head is absent from the file
    assert "Error(s) in loading state_dict" not in message  # not torch's raw message
    assert str(path) in message
    assert set(err.value.missing) >= set(dropped)
    assert err.value.unexpected == ["extra_head.weight"]
    assert err.value.mismatched == [("aggregator.patch_embed.pos_embed", (1, 5, 64), (1, 1370, 64))]


def test_mismatch_strict_false_still_refuses_shapes(tiny: VGGT, tmp_path: Path) -> None:
    state = dict(tiny.state_dict())
    state["aggregator.patch_embed.pos_embed"] = torch.zeros(1, 5, 64)
    path = save_checkpoint(state, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointMismatchError, match="pos_embed"):
        load_model(path, config=TINY, strict=False)


def test_tiny_checkpoint_for_the_1b_config_names_the_right_config(tiny_file: Path) -> None:
    with pytest.raises(CheckpointMismatchError) as err:
        load_model(tiny_file, config="vggt-1b")
    message = str(err.value)
    assert "config='vggt-tiny'" in message
    assert "and " in message and "more keys" in message  # long lists are truncated
    assert len(message.splitlines()) < 40


def test_prefixed_checkpoint_hint(tiny: VGGT, tmp_path: Path) -> None:
    path = tmp_path / "wrapped.pt"
    torch.save({f"net.{k}": v for k, v in tiny.state_dict().items()}, path)
    with pytest.raises(CheckpointMismatchError, match="starts with 'net.'"):
        load_model(path, config=TINY)


def test_summarize_keys_groups_and_truncates() -> None:
    universe = [f"blocks.{i}.{p}" for i in range(24) for p in ("attn.weight", "attn.bias", "mlp.weight")]
    universe += ["head.a", "head.b", "token"]
    assert summarize_keys([f"blocks.{i}.attn.weight" for i in range(24)], universe) == [
        "blocks.0..23.attn.weight  (24 keys)"
    ]
    assert summarize_keys(["head.a", "head.b"], universe) == ["head.*  (2 keys)"]
    assert summarize_keys([k for k in universe if k.startswith(("blocks.3.", "blocks.4."))], universe) == [
        "blocks.3..4.*  (6 keys)"
    ]
    assert summarize_keys(["blocks.1.attn.weight", "blocks.5.attn.weight"], universe) == [
        "blocks.1,5.attn.weight  (2 keys)"
    ]
    many = [f"x{i}.w" for i in range(20)]
    lines = summarize_keys(many, many + [f"x{i}.b" for i in range(20)], limit=5)
    assert lines[:5] == ["x0.w", "x1.w", "x2.w", "x3.w", "x4.w"] and lines[5] == "... and 15 more keys"


# ----------------------------------------------------------------------------------------------
# Bad files
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nope.safetensors", "nope.pt", "sub/dir/nope.bin"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(CheckpointNotFoundError, match=re.escape(str(path))) as err:
        load_model(path, config=TINY)
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(CheckpointNotFoundError, match=re.escape(str(path))):
        load_model(str(path), config=TINY)  # as a string it must not be taken for a repo id


def test_missing_relative_file_is_not_a_repo_id() -> None:
    with pytest.raises(CheckpointNotFoundError, match="weights/vggt.pt"):
        load_model("weights/vggt.pt", config=TINY)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ([torch.zeros(2), torch.ones(2)], "found a list"),
        ({"epoch": 3, "lr": 0.1}, "'epoch': int"),
        ({"model": "vggt", "step": 1}, "'model': str"),
        ({}, "found a dict"),
        (torch.zeros(3), "found a Tensor"),
    ],
)
def test_content_that_is_not_a_state_dict(tmp_path: Path, content: object, expected: str) -> None:
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointFormatError, match=re.escape(expected)):
        load_model(path, config=TINY)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty.safetensors", b""),
        ("text.pt", b"hello, I am not a checkpoint"),
        ("broken.pt", b"PK\x03\x04" + b"\0" * 64),
        ("bad_header.safetensors", (20).to_bytes(8, "little") + b"{not json at all!!!}"),
    ],
)
def test_damaged_files(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CheckpointFormatError, match=re.escape(str(path))):
        load_model(path, config=TINY)


def test_truncated_safetensors(tiny_file: Path) -> None:
    data = tiny_file.read_bytes()
    tiny_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match=re.escape(str(tiny_file))):
        load_model(tiny_file, config=TINY)


# ----------------------------------------------------------------------------------------------
# Identity
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["fast", "sha256"])
def test_identity_is_stable_and_sees_a_changed_byte(tmp_path: Path, method: str) -> None:
    path = save_checkpoint(
        {"w": torch.randn(100_000, generator=torch.Generator().manual_seed(0))}, tmp_path / "w.st"
    )
    first = file_identity(path, method)
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert file_identity(path, method) == first
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the same mtime (small file)
    assert file_identity(path, method) != first


def test_sha256_identity_is_the_content_hash(tiny_file: Path) -> None:
    import hashlib

    assert file_identity(tiny_file, "sha256") == hashlib.sha256(tiny_file.read_bytes()).hexdigest()[:16]
    _, info = load_model(tiny_file, config=TINY, identity="sha256")
    assert (info.identity, info.identity_method) == (file_identity(tiny_file, "sha256"), "sha256")


def test_fast_identity_on_large_files(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(5 << 20))
    stat = path.stat()
    fast, full = file_identity(path, "fast"), file_identity(path, "sha256")
    data = bytearray(path.read_bytes())
    data[-1] = 1  # the last MiB is hashed
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_identity(path, "fast") != fast
    data[-1], data[len(data) // 2] = 0, 1  # middle edit, same size and mtime: only sha256 sees it
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_identity(path, "fast") == fast
    assert file_identity(path, "sha256") != full
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # rewritten later
    assert file_identity(path, "fast") != fast


# ----------------------------------------------------------------------------------------------
# Hugging Face sources (no network: offline mode and a hand-made cache)
# ----------------------------------------------------------------------------------------------
@pytest.fixture()
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home / "hub"


@pytest.mark.parametrize("source", ["facebook/VGGT-1B", "facebook/VGGT-1B-Commercial@main:model.pt"])
def test_offline_repo_id_error(offline_hub: Path, source: str) -> None:
    repo = source.split("@")[0]
    with pytest.raises(HubCheckpointError) as err:
        load_model(source)
    message = str(err.value)
    assert f"'{repo}'" in message
    assert "HF_HUB_OFFLINE" in message and "local file" in message and "/path/to/model.safetensors" in message
    assert err.value.reason == "offline" and err.value.repo_id == repo
    assert isinstance(err.value, CheckpointError)


def _fake_cache(hub: Path, repo_id: str, files: dict[str, bytes], ref: str = "main") -> str:
    """The layout huggingface_hub writes: refs/<ref> -> commit, snapshots/<commit>/<files>,
    large files as symlinks to blobs/<sha256>."""
    import hashlib

    commit = "0123456789abcdef0123456789abcdef01234567"
    root = hub / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / ref).write_text(commit)
    (root / "blobs").mkdir()
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = root / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return commit


def test_cached_repo_loads_offline(tiny: VGGT, tiny_file: Path, offline_hub: Path) -> None:
    data = tiny_file.read_bytes()
    commit = _fake_cache(
        offline_hub, "acme/vggt-tiny", {"README.md": b"hi", "model.safetensors": data, "model.pt": b"x"}
    )
    model, info = load_model("acme/vggt-tiny", config=TINY)
    assert_same_state(tiny, model)
    assert info.source == "acme/vggt-tiny" and info.path.endswith("model.safetensors")
    assert info.revision == commit
    # The cache stores large files under their sha256: the identity comes for free.
    import hashlib

    assert (info.identity, info.identity_method) == (hashlib.sha256(data).hexdigest()[:16], "sha256")
    assert "acme/vggt-tiny@0123456789" in str(info)

    with pytest.raises(HubCheckpointError, match="acme/vggt-tiny"):
        load_model("acme/vggt-tiny:missing.safetensors", config=TINY)


def test_gated_repo_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub
    from huggingface_hub.utils import GatedRepoError

    def gated(*args: object, **kwargs: object) -> list[str]:
        error = GatedRepoError.__new__(GatedRepoError)
        Exception.__init__(error, "403 Client Error: access to model is restricted")
        raise error

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "list_repo_files", gated)
    with pytest.raises(HubCheckpointError) as err:
        load_model("facebook/VGGT-1B-Commercial")
    message = str(err.value)
    assert err.value.reason == "gated"
    assert "facebook/VGGT-1B-Commercial" in message and "licence" in message and "token" in message


def test_unreachable_hub_falls_back_to_cache(
    tiny: VGGT, tiny_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub

    def unreachable(*args: object, **kwargs: object) -> list[str]:
        raise ConnectionError("Name or service not known")

    hub = tmp_path / "hf" / "hub"
    _fake_cache(hub, "acme/vggt-tiny", {"model.safetensors": tiny_file.read_bytes()})
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "list_repo_files", unreachable)
    # Downloading the chosen file would also need the network: serve it from the cache.
    real_download = huggingface_hub.hf_hub_download
    monkeypatch.setattr(
        huggingface_hub,
        "hf_hub_download",
        lambda *a, **k: real_download(*a, **{**k, "local_files_only": True}),
    )
    model, _ = load_model("acme/vggt-tiny", config=TINY)
    assert_same_state(tiny, model)

    with pytest.raises(HubCheckpointError, match="unreachable.*Name or service not known") as err:
        load_model("acme/not-cached", config=TINY)
    assert err.value.reason == "unreachable"


@pytest.mark.parametrize(
    ("source", "parsed"),
    [
        ("facebook/VGGT-1B", ("facebook/VGGT-1B", None, None)),
        ("facebook/VGGT-1B@v1.0", ("facebook/VGGT-1B", "v1.0", None)),
        ("facebook/VGGT-1B:model.pt", ("facebook/VGGT-1B", None, "model.pt")),
        (
            "facebook/VGGT-1B@refs/pr/3:sub/model.safetensors",
            ("facebook/VGGT-1B", "refs/pr/3", "sub/model.safetensors"),
        ),
        ("hf://facebook/VGGT-1B", ("facebook/VGGT-1B", None, None)),
        ("not a repo", None),
        ("a/b/c", None),
    ],
)
def test_parse_repo_source(source: str, parsed: tuple | None) -> None:
    assert parse_repo_source(source) == parsed


@pytest.mark.parametrize(
    ("files", "chosen"),
    [
        (["README.md", "config.json", "model.pt", "model.safetensors"], "model.safetensors"),
        (["model.pt", "other.pt", ".gitattributes"], "model.pt"),
        (["pytorch_model.bin", "optimizer.pt"], "pytorch_model.bin"),
        (["sub/model.safetensors", "weights.safetensors"], "weights.safetensors"),
        (["vggt.pth", "training_args.bin"], "vggt.pth"),
    ],
)
def test_choose_checkpoint_file(files: list[str], chosen: str) -> None:
    assert choose_checkpoint_file(files, where="test") == chosen


def test_choose_checkpoint_file_refuses_to_guess() -> None:
    with pytest.raises(CheckpointError, match="a.safetensors, b.safetensors"):
        choose_checkpoint_file(["a.safetensors", "b.safetensors"], where="test")
    with pytest.raises(CheckpointNotFoundError, match="README.md"):
        choose_checkpoint_file(["README.md"], where="test")


# ----------------------------------------------------------------------------------------------
# Saving and converting
# ----------------------------------------------------------------------------------------------
def test_convert_pt_to_safetensors(tiny: VGGT, tmp_path: Path, images: torch.Tensor, reference: dict) -> None:
    src = tmp_path / "model.pt"
    torch.save({"model": {f"module.{k}": v for k, v in tiny.state_dict().items()}}, src)
    dst = convert_checkpoint(src, tmp_path / "out" / "model.safetensors", config=TINY)
    model, info = load_model(dst, config=TINY)
    assert info.format == "safetensors"
    assert_same_state(tiny, model)
    assert_same_outputs(model, reference, images)
    from safetensors import safe_open

    with safe_open(str(dst), framework="pt") as f:
        header = f.metadata()
    assert header["config"] == TINY and header["converted_from"] == str(src)
    assert header["source_sha256"] == file_identity(src, "sha256")
    assert not [p for p in dst.parent.iterdir() if p.name.endswith(".tmp")]  # no leftovers


def test_convert_with_dtype_and_cli(tiny: VGGT, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "model.pt"
    torch.save(tiny.state_dict(), src)
    dst = tmp_path / "model_bf16.safetensors"
    assert ckpt.main([str(src), str(dst), "--dtype", "bf16"]) == 0
    assert "wrote" in capsys.readouterr().out
    state = load_state_dict_file(dst, dtype=None)
    assert {v.dtype for v in state.values()} == {torch.bfloat16}
    assert ckpt.main([str(tmp_path / "missing.pt"), str(dst)]) == 1
    assert "missing.pt" in capsys.readouterr().err


def test_convert_refuses_wrong_config_and_bad_destination(tiny_file: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointMismatchError, match="vggt-tiny"):
        convert_checkpoint(tiny_file, tmp_path / "x.safetensors", config="vggt-small")
    with pytest.raises(CheckpointError, match=r"\.safetensors"):
        convert_checkpoint(tiny_file, tmp_path / "x.pt")


def test_save_checkpoint_unties_shared_tensors(tmp_path: Path) -> None:
    shared = torch.arange(6.0)
    path = save_checkpoint({"a": shared, "b": shared, "c": shared[:3]}, tmp_path / "s.safetensors")
    state = load_state_dict_file(path)
    assert torch.equal(state["a"], shared) and torch.equal(state["c"], shared[:3])


# ----------------------------------------------------------------------------------------------
# The full VGGT-1B key set (meta device: no memory)
# ----------------------------------------------------------------------------------------------
def test_vggt1b_matches_the_official_manifest(parity_dir: Path) -> None:
    manifest = json.loads((parity_dir / "vggt1b_state_dict_manifest.json").read_text())
    official = {key: tuple(shape) for key, shape in manifest}
    assert len(official) == 1797
    with torch.device("meta"):
        model = VGGT()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    diff = ckpt.compare_shapes(ours, official)
    assert diff.ok, ckpt.format_mismatch(diff, source="manifest", target="VGGT()")
    assert sum(v.numel() for v in model.parameters()) == 1_256_537_516

    # load_model's check (run on the file's shapes before any tensor is read) accepts an official
    # checkpoint and names what a damaged one lacks, in the full model's key space.
    check = ckpt._shape_check(ours, get_config("vggt-1b"), strict=True, source="model.pt")
    check(official, {})
    damaged = {k: s for k, s in official.items() if not re.search(r"global_blocks\.\d+\.attn\.qkv", k)}
    with pytest.raises(CheckpointMismatchError) as err:
        check(damaged, {})
    assert "aggregator.global_blocks.0..23.attn.qkv.*  (48 keys)" in str(err.value)  # weight + bias


def test_weights_info_str_for_hub_and_not_strict() -> None:
    info = WeightsInfo(
        source="facebook/VGGT-1B",
        path="/cache/models--facebook--VGGT-1B/snapshots/abc/model.safetensors",
        format="safetensors",
        identity="0123456789abcdef",
        identity_method="sha256",
        config="vggt-1b",
        num_parameters=1_256_537_516,
        dtype="bfloat16",
        device="cuda:0",
        revision="0123456789abcdef0123456789abcdef01234567",
    )
    text = str(info)
    assert text.startswith("weights facebook/VGGT-1B@0123456789 (model.safetensors)")
    assert "sha256:0123456789abcdef" in text and "params=1.26B" in text and "device=cuda:0" in text


RESUME_POINTS = sorted((Path(__file__).resolve().parents[1] / "checkpoints").glob("*.safetensors"))


@pytest.mark.parametrize("path", RESUME_POINTS, ids=lambda p: p.name)
def test_committed_resume_points_load_strictly(path: Path) -> None:
    """The files in checkpoints/ (training resume points and candidate weights; README there)
    are complete vggt-compact weights whose sha256 is the one checkpoints/README.md lists."""
    import hashlib

    model, info = ckpt.load_model(path, config="vggt-compact", identity="sha256")
    assert sum(p.numel() for p in model.parameters()) > 6_000_000
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"`{digest}`" in (path.parent / "README.md").read_text()
    assert all(torch.isfinite(p).all() for p in model.parameters())
