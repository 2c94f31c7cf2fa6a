"""The model that ships inside the package: what every tool runs when no checkpoint is given.

The released VGGT-1B weights cannot be bundled (about 5 GB, non-commercial licence) and cannot be
downloaded everywhere, so the package carries a compact model trained from scratch by this
project (``vggt-ros train``) on procedural scenes. Its training record and measured accuracy are
in its model card (``docs/model_card_compact.md``); read it before trusting its output.

    from vggt_ros.model.embedded import DEFAULT_MODEL
    path = DEFAULT_MODEL.verified_path()   # checks the file's sha256
    model, info = load_model(path, config=DEFAULT_MODEL.config)

Random weights are never a silent default: tools use them only behind an explicit ``--untrained``
flag (``model.untrained`` on the node).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vggt_ros.model.checkpoint.errors import CheckpointError
from vggt_ros.model.checkpoint.identity import file_identity

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model file shipped with the package.

    Attributes:
        name: versioned name shown in logs, reports and diagnostics.
        config: the named configuration it was trained with.
        filename: file inside ``vggt_ros/model/weights/``.
        sha256: full sha256 of the file (checked before use).
        image_size: longest model side it was trained for (pixels, multiple of 14).
        card: the model card, relative to the repository root.
        summary: one line on what it can and cannot do (printed with the name).
    """

    name: str
    config: str
    filename: str
    sha256: str
    image_size: int
    card: str
    summary: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename

    def verified_path(self) -> Path:
        """The file, after checking it exists and its sha256 is the recorded one.

        Raises:
            CheckpointError: missing or altered file (reinstall the package).
        """
        if not self.path.is_file():
            raise CheckpointError(
                f"the embedded model file {self.path} is missing: reinstall vggt_ros, or pass a checkpoint"
            )
        digest = file_identity(self.path, "sha256")
        if not self.sha256.startswith(digest):
            raise CheckpointError(
                f"the embedded model file {self.path} is altered (sha256 {digest}..., expected "
                f"{self.sha256[:16]}...): reinstall vggt_ros, or pass a checkpoint"
            )
        return self.path

    def describe(self) -> str:
        return f"embedded model {self.name} ({self.config}; {self.summary}; card: {self.card})"


DEFAULT_MODEL = EmbeddedModel(
    name="vggt-compact-v10",
    config="vggt-compact",
    filename="vggt-compact-v10.safetensors",
    sha256="f7f44d1c0341023c4de2680e530184871caf04424e03850c5b35109b495000e3",
    image_size=294,
    card="docs/model_card_compact.md",
    summary="about 215 GPU-minutes on procedural rooms: relative depth and camera rotation, far from VGGT-1B",
)


@dataclass(frozen=True)
class ModelChoice:
    """What to load: ``source`` (None: random weights), ``config`` and the model image size."""

    source: str | None
    config: str
    image_size: int
    embedded: EmbeddedModel | None
    description: str

    @property
    def untrained(self) -> bool:
        return self.source is None


def choose_model(
    checkpoint: str | None,
    config: str | None = None,
    image_size: int | None = None,
    untrained: bool = False,
) -> ModelChoice:
    """Resolve the model options every tool shares.

    * ``untrained``: random weights of ``config`` (default the embedded model's config);
    * a ``checkpoint``: that file or repo id with ``config`` (default: the config a safetensors
      file's header names, as ``vggt-ros train`` writes it, else ``vggt-1b``);
    * neither: the embedded default model (its config and image size unless given).

    ``image_size`` defaults to the embedded model's, to the width a checkpoint file says it was
    trained at (``export-model`` writes it), else to the config's ``img_size`` (518 for
    ``vggt-1b``).

    Raises:
        ValueError: a checkpoint together with ``untrained``, or a config the embedded model was
            not trained with.
        CheckpointError: the embedded file is missing or altered.
    """
    from vggt_ros.model.config import get_config

    if untrained and checkpoint:
        raise ValueError("a checkpoint and untrained weights were both asked for; choose one")
    if untrained:
        name = config or DEFAULT_MODEL.config
        size = image_size or get_config(name).img_size
        what = f"UNTRAINED random weights ({name}); outputs are meaningless"
        return ModelChoice(None, name, size, None, what)
    if checkpoint:
        name, where = config, ""
        if name is None:
            name, where = _config_saved_in(str(checkpoint))
        size = image_size
        if not size:
            from vggt_ros.model.checkpoint.formats import saved_image_size

            size = saved_image_size(str(checkpoint))
            if size:
                where += f", trained at {size} px"
        size = size or get_config(name).img_size
        return ModelChoice(str(checkpoint), name, size, None, f"checkpoint {checkpoint} ({name}{where})")
    if config and config != DEFAULT_MODEL.config:
        raise ValueError(
            f"no checkpoint given for config {config!r}: the embedded model is {DEFAULT_MODEL.config!r}; "
            "pass --checkpoint, or --untrained for random weights"
        )
    path = DEFAULT_MODEL.verified_path()
    size = image_size or DEFAULT_MODEL.image_size
    return ModelChoice(str(path), DEFAULT_MODEL.config, size, DEFAULT_MODEL, DEFAULT_MODEL.describe())


def _config_saved_in(checkpoint: str) -> tuple[str, str]:
    """``(config, note)`` for a checkpoint given without a config: the config named in a
    safetensors file's header (files written by ``vggt-ros train`` / ``export-model`` carry it),
    else ``vggt-1b`` (the released weights and their conversions carry none)."""
    from vggt_ros.model.checkpoint.formats import saved_config_name
    from vggt_ros.model.config import CONFIGS

    saved = saved_config_name(checkpoint)
    if saved in CONFIGS:
        return saved, ", as saved in the file"
    return "vggt-1b", ""
