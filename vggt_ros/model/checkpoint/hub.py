"""Hugging Face repos as checkpoint sources: ``org/name[@revision][:filename]``.

Parses repo ids, lists a repo's files (from the hub, or from the local cache when offline or
unreachable), downloads the chosen weights file through the Hugging Face cache, and turns every
hub failure (offline, unreachable, gated, missing repo / revision / file) into a
:class:`HubCheckpointError` saying how to pass a local file instead.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from vggt_ros.model.checkpoint.common import _Resolved
from vggt_ros.model.checkpoint.errors import CheckpointError, HubCheckpointError
from vggt_ros.model.checkpoint.formats import _list_files, choose_checkpoint_file

logger = logging.getLogger(__package__)  # the package's logger, as before the split into modules

_REPO_RE = re.compile(
    r"^(?:hf://)?(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"
    r"(?:@(?P<revision>[^:@]+))?(?::(?P<filename>[^:@]+))?$"
)


def parse_repo_source(source: str) -> tuple[str, str | None, str | None] | None:
    """``org/name[@revision][:filename]`` -> ``(repo_id, revision, filename)``; None if not one."""
    match = _REPO_RE.match(source)
    if match is None:
        return None
    return match["repo"], match["revision"], match["filename"]


def _hub_cache_dir() -> Path:
    """The Hugging Face cache, read from the environment now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE)


def _local_file_advice(repo_id: str) -> str:
    return (
        f"Pass a local file instead, e.g. load_model('/path/to/model.safetensors'); to get one, run "
        f"`hf download {repo_id} --local-dir DIR` on a machine with network access and copy DIR here"
    )


def _hub_error(
    exc: Exception, repo_id: str, revision: str | None, cache_dir: Path, offline: bool
) -> HubCheckpointError:
    """Translate a huggingface_hub failure into one message a person can act on."""
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"Hugging Face repo '{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    if isinstance(exc, GatedRepoError):
        reason = "gated"
        text = (
            f"{where} is gated: accept its licence at https://huggingface.co/{repo_id} while logged in, then "
            "provide a token of that account (`hf auth login`, HF_TOKEN=..., or load_model(..., token=...))"
        )
    elif isinstance(exc, RepositoryNotFoundError):
        reason = "repo_not_found"
        text = f"{where} does not exist or is private (private repos need a token: `hf auth login`, HF_TOKEN)"
    elif isinstance(exc, RevisionNotFoundError):
        reason = "revision_not_found"
        text = f"{where}: no such revision (branch, tag or commit)"
    elif isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError):
        reason = "file_not_found"
        text = f"{where} has no such file ({str(exc)[:200]})"
    else:
        reason = "offline" if offline else "unreachable"
        why = (
            "offline mode is on (HF_HUB_OFFLINE=1)"
            if offline
            else f"the hub is unreachable ({str(exc)[:200]})"
        )
        text = f"cannot fetch the checkpoint of {where}: {why}, and it is not in the local cache {cache_dir}"
    return HubCheckpointError(f"{text}. {_local_file_advice(repo_id)}.", repo_id=repo_id, reason=reason)


def _list_hub_files(
    repo_id: str, revision: str | None, cache_dir: Path, token: object, offline: bool
) -> list[str]:
    """The repo's files: from the hub, or from the cached snapshot when offline or unreachable."""
    from huggingface_hub import list_repo_files, snapshot_download
    from huggingface_hub.utils import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    network_error: Exception | None = None
    if not offline:
        try:
            return list_repo_files(repo_id, revision=revision, token=token)
        except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError):
            raise
        except Exception as exc:  # connection errors: their classes depend on the HTTP library
            network_error = exc
            logger.warning(
                "cannot list %s on the hub (%s); trying the local cache. Set HF_HUB_OFFLINE=1 to skip "
                "the network at start-up.",
                repo_id,
                exc,
            )
    try:
        snapshot = Path(
            snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
        )
    except LocalEntryNotFoundError:
        if network_error is not None:
            raise network_error from None  # the reason the cache was needed is the one to report
        raise
    return _list_files(snapshot)


def _resolve_hub(
    source: str, repo_id: str, revision: str | None, filename: str | None, *, token: str | bool | None
) -> _Resolved:
    from huggingface_hub import hf_hub_download

    cache_dir = _hub_cache_dir()
    offline = _hub_offline()
    try:
        if filename is None:
            files = _list_hub_files(repo_id, revision, cache_dir, token, offline)
            filename = choose_checkpoint_file(files, where=f"Hugging Face repo '{repo_id}'")
        local = hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir, token=token, local_files_only=offline
        )
    except CheckpointError:
        raise
    except Exception as exc:
        raise _hub_error(exc, repo_id, revision, cache_dir, offline) from exc
    return _Resolved(
        source=source,
        path=Path(local),
        revision=_snapshot_commit(Path(local)),
        sha256=_blob_sha256(Path(local)),
    )


def _snapshot_commit(path: Path) -> str | None:
    """The commit of a file in the Hugging Face cache (``.../snapshots/<commit>/<file>``)."""
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", parts[i + 1]):
            return parts[i + 1]
    return None


def _blob_sha256(path: Path) -> str | None:
    """Large (LFS) files in the Hugging Face cache are stored under their content's sha256."""
    real = path.resolve()
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name
    return None
