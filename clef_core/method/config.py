"""Typed, frozen experiment configuration: one model per concern, composed into one.

Defaults are the paper's (DESIGN.md); named presets in `presets/*.yaml` hold only their
differences from these defaults; `--set a.b=value` overrides win over the preset. The resolved
config is written beside every output and logged to MLflow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clef_core.common.datasets import REGISTRY, labelled
from clef_core.common.errors import ConfigError
from clef_core.common.storage import Location, has_scheme, location

PRESET_DIR = Path(__file__).parents[1] / "presets"
DATASETS = labelled()  # every dataset with labels to train on (clef_core.common.datasets)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Frozen):
    # This machine's folder: logs, the MLflow SQLite store, Prefect's home, the tracking
    # spool, the units' locks and local copies; by default the shards and results too.
    data_dir: Path = Path("data")
    # Where the shards are read from: a path or a URI (s3://bucket/clef/shards, any pyarrow or
    # fsspec filesystem; `clef_core.common.storage`). None = <data_dir>/shards.
    shards: str | None = None
    # Where results are written: the units' folders (runs/: the unit cache) and Ray Train's
    # storage (ray_results/); a path or URI. None = data_dir. A multi-node cluster needs one
    # every node reaches (object storage or a shared file system).
    storage: str | None = None
    image_size: int = Field(224, ge=32, le=1024)  # side of the aligned face crop in the shards

    @model_validator(mode="after")
    def _local_data_dir(self) -> DataConfig:
        if has_scheme(str(self.data_dir)):
            raise ValueError(
                f"data.data_dir is this machine's folder, got {self.data_dir} (a URI): put the "
                "shards and results in object storage with data.shards=<URI>/shards and "
                "data.storage=<URI>"
            )
        return self

    @property
    def shard_dir(self) -> Location:
        return location(self.shards or self.data_dir / "shards")

    @property
    def storage_dir(self) -> Location:
        return location(self.storage or self.data_dir)


class InlineCLIPConfig(_Frozen):
    """A small open_clip CLIP, for CPU runs (fields map onto open_clip's CLIPVision/TextCfg)."""

    embed_dim: int = Field(64, ge=8)  # joint embedding width
    image_size: int = Field(64, ge=16)  # model input side in pixels
    patch_size: int = Field(8, ge=2)  # ViT patch side
    vision_width: int = Field(128, ge=16)  # ViT width (ResNet: stem width)
    # ViT depth; a list of 4 block counts builds open_clip's ModifiedResNet instead (CLIP's
    # RN50 family): convolutions learn local appearance from little data far better.
    vision_layers: int | tuple[int, int, int, int] = 4
    vision_head_width: int = Field(32, ge=8)  # width per attention head
    text_width: int = Field(64, ge=16)  # text transformer width
    text_layers: int = Field(2, ge=1)  # text transformer depth
    text_heads: int = Field(2, ge=1)  # text attention heads
    context_length: int = Field(77, ge=8)  # tokens per text

    @model_validator(mode="after")
    def _divisible(self) -> InlineCLIPConfig:
        if isinstance(self.vision_layers, tuple):
            if self.image_size % 32 or min(self.vision_layers) < 1:
                raise ValueError(
                    f"a ResNet needs image_size a multiple of 32 and >= 1 block per stage "
                    f"(got {self.image_size}, {list(self.vision_layers)})"
                )
        elif self.vision_layers < 1:
            raise ValueError(f"vision_layers must be >= 1 (got {self.vision_layers})")
        elif self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )
        return self


class WeightsSource(_Frozen):
    """Which initial weights a model starts from (`clef_core.method.pretrained`): in the
    resolved config, so meta.json, the MLflow params and the registered model's description
    say it."""

    name: str  # as given: openai, laion2b_s34b_b88k, hf-hub:ORG/NAME, farl-base-ep64, URL, path
    url: str  # the file it resolved to: its URL (a hub file's pinned to a commit) or its path
    sha256: str  # of that file as published (before any TorchScript conversion)

    def describe(self) -> str:
        return f"{self.name} ({self.url}, SHA-256 {self.sha256})"


class ModelConfig(_Frozen):
    # open_clip architecture name; the paper's ViT-B/16 with FaRL needs QuickGELU, so the
    # default is open_clip's `ViT-B-16-quickgelu` (plain `ViT-B-16` loads FaRL's keys but
    # computes a different activation). "inline" builds the model from `inline` instead.
    arch: str = "ViT-B-16-quickgelu"
    inline: InlineCLIPConfig | None = None  # the small CLIP built when arch is "inline"
    quick_gelu: bool = True  # activation of an inline model (FaRL/OpenAI weights use QuickGELU)
    init_weights: Path | None = None  # FaRL or OpenAI CLIP checkpoint; None = random init
    init_source: WeightsSource | None = None  # what init_weights is, when it was resolved
    # What the image tower sees. "clip": CLIP's mean/std-normalised RGB (the paper; pretrained
    # weights expect it). "per_image_gray": each image turned grey and standardised to zero
    # mean and unit variance, which hides skin tone, lighting and contrast: a small model
    # trained from scratch on a few subjects otherwise learns who it sees instead of which
    # action units (measured on the synthetic BP4D: docs/measurements.md, "Training from scratch").
    input_norm: Literal["clip", "per_image_gray"] = "clip"

    @model_validator(mode="after")
    def _inline_matches_arch(self) -> ModelConfig:
        if (self.arch == "inline") != (self.inline is not None):
            raise ValueError("set arch: inline together with an inline: {...} model, or neither")
        return self

    @property
    def image_size(self) -> int:
        return self.inline.image_size if self.inline else 224


class AugmentConfig(_Frozen):
    # The paper names the kinds (random cropping, horizontal flipping, random rotation), not
    # their amounts: these values are ours.
    crop_scale: tuple[float, float] = (0.8, 1.0)  # random-resized-crop area range
    flip_p: float = Field(0.5, ge=0.0, le=1.0)  # horizontal flip probability
    rotation_deg: float = Field(10.0, ge=0.0, le=90.0)  # uniform in [-deg, deg]

    @model_validator(mode="after")
    def _crop_range(self) -> AugmentConfig:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must be 0 < low <= high <= 1, got ({lo}, {hi})")
        return self


class Stage1Config(_Frozen):
    """Activity-supervised cross-modal contrastive pre-training (Eq. 1-2)."""

    epochs: int = Field(5, ge=0)  # 0 switches stage 1 off (ablation PI)
    warmup_epochs: float = Field(1.0, ge=0.0)
    batch_size: int = Field(64, ge=2)
    # Ours: not given in the paper; a usual CLIP fine-tuning rate.
    lr: float = Field(5e-5, gt=0.0)
    min_lr: float = Field(1e-6, ge=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    temperature: float = Field(0.25, gt=0.0)  # eps in Eq. 1, fixed
    weight_image_image: float = Field(1.0, ge=0.0)  # L_II; 0 switches it off
    weight_image_activity: float = Field(1.0, ge=0.0)  # L_IA; 0 = ablation without PA
    # Who is whose positive in Eq. 1. "activity" (the paper): every image of the same activity.
    # "instance" (ours, the baseline the paper argues against, its Figure 1a): only the other
    # view of the same image, every other image a negative (SimCLR's pairing); it has no
    # activity text, so it needs weight_image_activity 0.
    pairing: Literal["activity", "instance"] = "activity"
    augment: AugmentConfig = AugmentConfig()
    # BP4D+ only (the paper: "equally sample 480,000 frames ... by 10 activity categories"):
    # at most this many frames per activity, all of an activity's where it has fewer; None =
    # every frame. BP4D's stage 1 reads its coded frames, unbalanced (clef_core.training.selection).
    frames_per_activity: int | None = Field(48_000, ge=1)
    # Batches per epoch; None = one pass over the data. More than a pass holds: the data is
    # passed over again (ours; the demo's fixed budget of steps).
    steps_per_epoch: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _instance_has_no_text(self) -> Stage1Config:
        if self.pairing == "instance" and self.weight_image_activity > 0:
            raise ValueError(
                "stage1.pairing=instance pairs images with their own views only, so it has no "
                f"activity text: set stage1.weight_image_activity=0 (got {self.weight_image_activity})"
            )
        return self


_PAPER_LR = {d.name: d.paper_lr for d in REGISTRY.values() if d.paper_lr is not None}


class Stage2Config(_Frozen):
    """Fine-tuning with label names (N) and descriptions (D) (Eq. 3-6)."""

    # Ours: the paper gives stage 2's batch size (64), optimizer (AdamW) and learning rates,
    # not its epochs, weight decay or schedule. We use 10 epochs and stage 1's schedule and
    # decay (1 warm-up epoch, cosine to 1e-6, AdamW weight decay 0.01).
    epochs: int = Field(10, ge=1)  # ours
    warmup_epochs: float = Field(1.0, ge=0.0)  # ours
    batch_size: int = Field(64, ge=2)
    lr: dict[str, float] = _PAPER_LR  # per dataset, the paper's values
    min_lr: float = Field(1e-6, ge=0.0)  # ours (stage 1's)
    weight_decay: float = Field(0.01, ge=0.0)  # ours (stage 1's)
    lam: float = Field(2.0, ge=0.0)  # lambda in Eq. 6, the weight of L_IN
    weight_dn: float = Field(1.0, ge=0.0)  # weight of L_DN; 0 = ablation without D
    # "names": classes are text features of their names (N); "linear": a linear head on the
    # image feature with plain weighted CE/BCE (ablation without N and D).
    head: Literal["names", "linear"] = "names"
    threshold: float = Field(0.5, gt=0.0, lt=1.0)  # AU present when sigmoid(s) > threshold
    # 1/tau at the start (CLIP's initial value). Ours: it overwrites the logit scale loaded
    # with the initial weights (FaRL's / CLIP's own learned one); the paper says only that
    # tau is learnable.
    logit_scale_init: float = Field(1 / 0.07, gt=0.0)
    logit_scale_max: float = Field(100.0, gt=0.0)  # clamp of 1/tau, as CLIP
    augment: AugmentConfig = AugmentConfig(crop_scale=(0.9, 1.0), rotation_deg=5.0)  # ours
    # As stage 1's: batches per epoch, passing over the data again when needed.
    steps_per_epoch: int | None = Field(None, ge=1)
    eval_every_epoch: bool = False  # held-out metrics after every epoch, not just the last
    # Ours (label efficiency; the paper trains on every label): the fraction of the TRAINING
    # SUBJECTS whose AU/expression labels stage 2 keeps (rounded up, at least one subject),
    # chosen with label_seed; the other training subjects' rows are dropped from stage 2 (their
    # frames may still be in stage 1, which reads no AU labels). A fraction of subjects, not of
    # frames: a subject's frames are near-duplicates, so only fewer subjects make labels scarce.
    label_fraction: float = Field(1.0, gt=0.0, le=1.0)
    label_seed: int = Field(0, ge=0)  # ours: which subjects a fraction keeps

    def lr_for(self, dataset: str) -> float:
        if dataset not in self.lr:
            raise ConfigError(f"stage2.lr has no learning rate for dataset {dataset!r}")
        return self.lr[dataset]


class ComputeConfig(_Frozen):
    ray_address: str | None = None  # None = a local Ray instance; "auto" or ray://host:port
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)  # < 1 leaves CPUs for Ray Data on small hosts
    gpus_per_worker: float = Field(1.0, gt=0.0)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto = bf16 autocast on CUDA
    max_failures: int = Field(2, ge=0)  # worker restarts before a run fails
    data_cpus: float = Field(1.0, gt=0.0)  # CPUs per Ray Data decode task
    # Decode tasks running at once (None = as many as the CPUs allow); on a 2-core machine a
    # few warm processes beat many that each import torch.
    data_concurrency: int | None = Field(None, ge=1)
    # Training rows each worker mixes before batching (0: stream order). Shards hold one
    # sequence each, in frame order, so without it a batch is a few seconds of one subject
    # in one task (stage 1's activity contrast then has no negatives). Files are also read in
    # a new random order every epoch. Memory: rows x a decoded, augmented row (64 px: ~100 KB
    # for stage 1's two views; 224 px: ~1.2 MB). Long real sequences want a larger buffer.
    shuffle_buffer: int = Field(1024, ge=0)
    # Ours: decode each dataset's shards once into uint8 arrays at the model's source size
    # (`<data_dir>/cache/`) and feed the workers from memory, instead of reading and decoding
    # the shards in Ray Data tasks every epoch. For data that fits in memory (64 px: ~15 KB a
    # frame); the same batches either way (clef_core.training.data).
    cache_decoded: bool = False
    # The GPU path (ours; clef_core/method/hardware.py). TF32 for the matmuls and convolutions
    # left in fp32 on CUDA (bf16 autocast, `precision`, runs the rest); no effect on CPU.
    tf32: bool = True
    # torch.compile the model (in place): the first steps compile (minutes for ViT-B/16).
    torch_compile: bool = False
    # Recompute each transformer block's activations in the backward pass (open_clip's
    # set_grad_checkpointing): less memory for a larger batch, about a third more compute.
    grad_checkpointing: bool = False
    # Training batches in pinned host memory, copied to the GPU without blocking (CUDA only).
    pin_memory: bool = True
    # CPUs for Ray Data's decode tasks per training worker (per GPU): at most
    # num_workers x this / data_cpus decode tasks at once, so decoding keeps up with the GPUs
    # (None: data_concurrency, or as many as the free CPUs allow). cpus_per_worker is the
    # training process's own; Ray Data never uses those.
    decode_cpus_per_worker: float | None = Field(None, gt=0.0)
    concurrent_units: int = Field(1, ge=1)  # trainings the flow runs at once (>1 on a cluster)

    @property
    def decode_concurrency(self) -> int | None:
        """Ray Data decode tasks at once: data_concurrency when set, else sized by
        decode_cpus_per_worker, else None (as many as the free CPUs allow)."""
        if self.data_concurrency is not None or self.decode_cpus_per_worker is None:
            return self.data_concurrency
        return max(1, int(self.num_workers * self.decode_cpus_per_worker / self.data_cpus))


class TrackingConfig(_Frozen):
    mlflow_uri: str | None = None  # None = sqlite:///<data_dir>/mlflow.db
    experiment_prefix: str = "clef"  # experiments are "<prefix>-<protocol>"
    register_model: bool = True  # register the stage-2 model in the MLflow registry


class ProtocolConfig(_Frozen):
    # The paper's Tables 2-5: every labelled dataset of the registry, in its order.
    datasets: list[str] = list(DATASETS)
    folds: list[int] | None = None  # fold numbers from 1; None = every fold of each dataset

    @model_validator(mode="after")
    def _known(self) -> ProtocolConfig:
        unknown = [d for d in self.datasets if d not in DATASETS]
        if unknown:
            raise ValueError(f"unknown dataset {unknown[0]!r}; known: {', '.join(DATASETS)}")
        return self


class ExperimentConfig(_Frozen):
    preset: str = "default"
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    compute: ComputeConfig = ComputeConfig()
    tracking: TrackingConfig = TrackingConfig()
    protocol: ProtocolConfig = ProtocolConfig()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def flat(self) -> dict[str, str]:
        """Dotted key -> value string, for MLflow params."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out[prefix] = str(value)

        walk("", self.model_dump(mode="json"))
        return out


def known_presets() -> list[str]:
    return sorted(["default", *(p.stem for p in PRESET_DIR.glob("*.yaml"))])


def _deep_merge(base: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in diff.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# An override is either a user's `--set key=value` text (the value read as YAML, as typed on a
# command line: `stage1.epochs=0`, `protocol.folds=[1,2]`) or a mapping of dotted keys to typed
# values, which the code's own overrides use: taken as they are, so a path with '#', ': ' or
# spaces stays that path (through YAML, `/data/my runs #2` lost its '#2' and `a: b` became a dict).
Override = str | Mapping[str, Any]


def _nested(key: str, value: Any) -> dict[str, Any]:
    """`stage1.epochs`, 1 -> {"stage1": {"epochs": 1}}."""
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"expected an override key like stage1.epochs, got {key!r}")
    node: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        node = {part: node}
    return node


def _holds_text(key: str) -> bool:
    """Whether the setting at dotted `key` holds only text (a path, URI or address, maybe
    None): such a value is kept as typed, since YAML would cut `runs/x #y` at the '#' and make
    `a: b` a mapping. Unknown keys: False (validation names them)."""
    model: Any = ExperimentConfig
    kinds: list[Any] = []
    for part in key.strip().split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        annotation = fields[part].annotation
        union = get_origin(annotation) in (Union, UnionType)  # `str | None`; not list[str]
        kinds = [a for a in get_args(annotation) if a is not type(None)] if union else [annotation]
        model = next((a for a in kinds if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return all(kind in (str, Path) for kind in kinds)


def parse_override(text: str) -> dict[str, Any]:
    """`stage1.epochs=1` -> {"stage1": {"epochs": 1}}. The value is read as YAML (numbers,
    lists, booleans as typed on a command line), except for a setting that holds text (paths,
    URIs): kept exactly, `null` or nothing giving None."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected an override like stage1.epochs=1, got {text!r}")
    if _holds_text(key):
        return _nested(key, None if raw.strip() in ("", "null", "~") else raw)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return _nested(key, value)


def override_tree(override: Override) -> dict[str, Any]:
    """One override as a nested dict: a text parsed, a mapping's values kept as given (a Path
    as its text, the form the config validates)."""
    if isinstance(override, str):
        return parse_override(override)
    tree: dict[str, Any] = {}
    for key, value in override.items():
        tree = _deep_merge(tree, _nested(key, str(value) if isinstance(value, Path) else value))
    return tree


def _format_error(err: ValidationError) -> str:
    messages = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "config"
        if e["type"] == "extra_forbidden":
            messages.append(f"{field}: unknown setting")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            messages.append(f"{field}: {e['msg'].removeprefix('Value error, ')}{shown}")
    return "invalid config: " + "; ".join(messages)


def load_config(preset: str = "default", overrides: Sequence[Override] = ()) -> ExperimentConfig:
    """The defaults, then the preset's diff, then each override in order, validated."""
    if preset not in known_presets():
        raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(known_presets())}")
    tree: dict[str, Any] = {"preset": preset}
    if preset != "default":
        diff = yaml.safe_load((PRESET_DIR / f"{preset}.yaml").read_text()) or {}
        tree = _deep_merge(tree, diff)
    if isinstance(overrides, str | Mapping):  # one override where a sequence belongs
        raise TypeError(f"overrides is a sequence of overrides, got {overrides!r}")
    for override in overrides:
        tree = _deep_merge(tree, override_tree(override))
    try:
        cfg = ExperimentConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    if preset == "paper" and cfg.model.init_weights is None:
        warn_from_scratch()
    return cfg


FROM_SCRATCH = (
    "preset 'paper' without initial weights: the ViT-B/16 trains FROM SCRATCH, not from FaRL "
    "as in the paper; give --weights farl=farl-base-ep64 (clef reproduce: fetched once) or "
    "--set model.init_weights=PATH (FaRL's checkpoint)"
)
_warned: set[str] = set()


def warn_from_scratch() -> None:
    """One clear warning line per process (every row and command loads the config again)."""
    if FROM_SCRATCH not in _warned:
        _warned.add(FROM_SCRATCH)
        logging.getLogger(__name__).warning(FROM_SCRATCH)


def save_config(config: ExperimentConfig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_yaml())
    return path


def read_config(path: Path) -> ExperimentConfig:
    """Load a resolved config written by `save_config`."""
    try:
        return ExperimentConfig.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as err:
        raise ConfigError(f"{path}: " + _format_error(err)) from None


# Table 6's rows as config overrides, one per row of the paper, named by the paper's
# components. PI = stage 1 runs (L_II); PA = stage 1 also uses the activity text (L_IA);
# N = classes are text features of label names (L_IN on the names head; without N the image
# feature goes through a linear head with plain weighted CE/BCE, and the text tower is unused);
# D = L_DN on the descriptions. The image encoder I is in every row. Each switch changes a
# loss weight or the head, never a separate code path. The CLIP and FaRL rows are the same
# training (no stage 1) from different initial weights (`ABLATION_WEIGHTS`); the CLEF rows
# start from FaRL, as the paper's do. SSL (ours) = stage 1 with instance pairing.
_NO_STAGE1 = {"stage1.epochs": 0}
_NO_PA = {"stage1.weight_image_activity": 0}
_NO_N = {"stage2.head": "linear", "stage2.weight_dn": 0}
_NO_D = {"stage2.weight_dn": 0}
_SSL = {"stage1.pairing": "instance", **_NO_PA}
MAIN = "PA+PI+N+D"  # the full method's row in Table 6
ABLATIONS: dict[str, dict[str, Any]] = {
    "CLIP-I": _NO_STAGE1 | _NO_N,
    "CLIP-I+N": _NO_STAGE1 | _NO_D,
    "CLIP-I+N+D": _NO_STAGE1,
    "FaRL-I": _NO_STAGE1 | _NO_N,
    "FaRL-I+N": _NO_STAGE1 | _NO_D,
    "FaRL-I+N+D": _NO_STAGE1,
    "PI": _NO_PA | _NO_N,
    "PA+PI": _NO_N,
    "PI+N": _NO_PA | _NO_D,
    "PA+PI+N": _NO_D,
    "PI+N+D": _NO_PA,
    MAIN: {},  # the full method
    # Ours, no paper figure: stage 1 with instance pairing (the paper's Figure 1a, SimCLR's
    # positives: only the other view of the same image), beside PI and PI+N+D.
    "SSL": _SSL | _NO_N,
    "SSL+N+D": _SSL,
}
# Whose weights each row starts from in the paper: its CLIP rows from OpenAI's CLIP, the rest
# from FaRL ("Model parameters are loaded from FaRL"). No weights file: from scratch.
ABLATION_WEIGHTS: dict[str, Literal["CLIP", "FaRL"]] = {
    name: "CLIP" if name.startswith("CLIP-") else "FaRL" for name in ABLATIONS
}
# Earlier names of the rows without stage 1 (kept so older commands and reports still read).
ABLATION_ALIASES = {"baseline": "FaRL-I", "I": "FaRL-I", "N": "FaRL-I+N", "N+D": "FaRL-I+N+D"}


def ablation_name(name: str) -> str:
    """The row's canonical name (an earlier alias resolved); ConfigError if unknown."""
    name = ABLATION_ALIASES.get(name, name)
    if name not in ABLATIONS:
        raise ConfigError(f"unknown ablation {name!r}; known: all, {', '.join(ABLATIONS)}")
    return name


def ablation_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """The rows asked for, canonical, each once, in the paper's order; "all" = every row."""
    if "all" in names:
        return list(ABLATIONS)
    wanted = {ablation_name(n) for n in names}
    return [n for n in ABLATIONS if n in wanted]


def ablation_overrides(name: str) -> tuple[Override, ...]:
    """The row's overrides, to go first in a `load_config` list (a caller's own win)."""
    return (ABLATIONS[ablation_name(name)],)


def ablation_init_weights(
    name: str, configured: Path | None, weights: dict[str, Path] | None = None
) -> Path | None:
    """The initial weights file of a row: `weights["clip"]` for the CLIP rows, and for the
    others `weights["farl"]`, else the config's `model.init_weights` (which the paper's
    preset documents as FaRL's). None = from scratch: no CLIP row ever starts from FaRL's."""
    weights = weights or {}
    if ABLATION_WEIGHTS[ablation_name(name)] == "CLIP":
        return weights.get("clip")
    return weights.get("farl", configured)
