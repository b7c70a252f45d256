"""A reproduction's plan, decided once from its parameters: the configs (the full method and
each ablation row, with their initial weights), the units each trains in order, the real
dataset roots and every dataset needed. The Prefect flow, `clef reproduce` and the tests call
`plan_reproduction`; `ReproductionParams` are the flow's parameters, defined here once.
`resolve_config` is the one way an entry point turns a preset, overrides and its own options
into a config (typed values: a path keeps its '#' and ': '; nothing created or set)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from clef_core.common.errors import ClefError, ConfigError
from clef_core.common.paths import symlink_loop
from clef_core.common.runtime import data_root, default_data_dir
from clef_core.method.config import (
    DATASETS,
    MAIN,
    ExperimentConfig,
    Override,
    ablation_init_weights,
    ablation_names,
    ablation_overrides,
    load_config,
)
from clef_core.method.pretrained import InitialWeights, fetch_weights
from clef_core.training.protocol import Unit, datasets_of, plan, zeroshot_datasets

# The command-line options that set a config value, by the key they set.
FLAG_OF = {
    "data.data_dir": "--data-dir",
    "compute.ray_address": "--ray-address",
    "tracking.mlflow_uri": "--mlflow-uri",
}


def resolve_config(
    preset: str,
    overrides: Sequence[Override],
    data_dir: Path | None = None,
    ray_address: str | None = None,
    mlflow_uri: str | None = None,
) -> ExperimentConfig:
    """The preset + overrides, with the command line's data dir / Ray / MLflow settings as
    typed values (a data dir named `my runs #2: x` stays that). Sets and creates nothing: the
    entry point calls `use_data_dir` once it has the config."""
    given = {
        "data.data_dir": data_dir,
        "compute.ray_address": ray_address or None,
        "tracking.mlflow_uri": mlflow_uri or None,
    }
    flags = {k: v for k, v in given.items() if v is not None}
    for override in overrides:
        keys = {override.partition("=")[0].strip()} if isinstance(override, str) else set(override)
        for key in sorted(keys & set(flags)):
            raise ConfigError(
                f"--set {key} and its own option ({FLAG_OF[key]} {flags[key]}) both given: "
                "expected one of them"
            )
    cfg = load_config(preset, [*overrides, flags])
    root = data_root(cfg.data.data_dir)
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"data_dir": root})})


class ReproductionParams(BaseModel):
    """What to reproduce: the flow's parameters, one Prefect parameter each (the UI renders
    them as a form; a run's `--param NAME=...` replaces that one and keeps the deployment's
    others)."""

    preset: str = "cpu-tiny"  # config preset: cpu-tiny (2 CPU cores), paper (GPUs), default
    overrides: list[str] = []  # config overrides, e.g. ["stage1.epochs=1"]
    datasets: list[str] | None = None  # protocols to run; None = the preset's protocol.datasets
    folds: list[int] | None = None  # fold numbers from 1; None = the preset's protocol.folds
    # Table 6 rows besides the full method (PA+PI+N+D), by name (CLIP-I ... FaRL-I+N+D, PI,
    # PA+PI, PI+N, PA+PI+N, PI+N+D; ours: SSL, SSL+N+D, stage 1 with instance pairing) or
    # "all"; `clef_core.method.config.ABLATIONS`.
    ablations: list[str] = []
    # Initial weights by source, "clip" and "farl": the CLIP rows start from "clip", the others
    # from "farl" (else model.init_weights); a row without one trains from scratch. Each a file,
    # a URL or a name (openai, farl-base-ep64, hf-hub:ORG/NAME: clef_core.method.pretrained),
    # fetched once into the cache and checked.
    weights: dict[str, str] = {}
    # The zero-shot experiments too (clef_core.training.zeroshot: unseen RAF-DB and FERPlus
    # expressions; BP4D AUs -> their expressions; rows CLEF and FaRL), with the full method's
    # config and its seed; their table goes in the report.
    zeroshot: bool = False
    # Linear probes of each fold's stage-1 image features against a random initialisation
    # (clef_core.training.probe: AUs, activity, identity); their table goes in the report.
    probes: bool = False
    synthetic: bool = True  # use the embedded synthetic data (generated once if absent)
    roots: dict[str, Path] = {}  # real dataset roots by name; win over the synthetic ones
    data_dir: Path | None = (
        None  # shards, runs, reports, MLflow store; None = $CLEF_DATA_DIR or ./data
    )
    ray_address: str | None = None  # None = a local Ray instance
    mlflow_uri: str | None = None  # None = SQLite in the data dir
    synthetic_preset: str = Field("demo", pattern="^(test|demo)$")  # size of generated data

    @field_validator("weights", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        """Paths as given by Python callers (a URL would not survive as a Path: '//' -> '/')."""
        return {k: str(v) for k, v in value.items()} if isinstance(value, dict) else value


def configs(params: ReproductionParams) -> dict[str, ExperimentConfig]:
    """The full method's config, and one per ablation row asked for, each with its initial
    weights fetched (`initial_weights`) and named in `model.init_source`."""
    fetched = initial_weights(params)
    given: dict[str, Any] = {
        "protocol.datasets": params.datasets,
        "protocol.folds": params.folds,
        # as the config's own: the paper preset then does not warn
        "model.init_weights": fetched["farl"].path if "farl" in fetched else None,
    }
    extra: list[Override] = [*params.overrides, {k: v for k, v in given.items() if v is not None}]
    paths = {source: w.path for source, w in fetched.items()}
    sources = {w.path: w.source for w in fetched.values()}
    out = {}
    for name in [MAIN, *(n for n in ablation_names(params.ablations) if n != MAIN)]:
        sets = [*ablation_overrides(name), *extra]
        cfg = resolve_config(
            params.preset, sets, params.data_dir or default_data_dir(), params.ray_address,
            params.mlflow_uri,
        )  # fmt: skip
        init = ablation_init_weights(name, cfg.model.init_weights, paths)
        model = {"init_weights": init, "init_source": sources.get(init) if init else None}
        out[name] = cfg.model_copy(update={"model": cfg.model.model_copy(update=model)})
    return out


def initial_weights(params: ReproductionParams) -> dict[str, InitialWeights]:
    """Each source's weights fetched, checked and converted (`fetch_weights`): `--weights`'s,
    and the config's own `model.init_weights` (taken as FaRL's) when no farl is given. Fetched
    here, at planning, so a typo or a missing file fails before any work."""
    unknown = sorted(set(params.weights) - {"clip", "farl"})
    if unknown:
        raise ClefError(f"weights: unknown source {', '.join(unknown)}; known: clip, farl")
    specs = dict(params.weights)
    # The architecture the names resolve for (open_clip's tags are per architecture); a farl
    # placeholder keeps the paper preset from warning about training from scratch here.
    placeholder = [{"model.init_weights": "farl"}] if "farl" in specs else []
    model = load_config(params.preset, [*params.overrides, *placeholder]).model
    if "farl" not in specs and model.init_weights is not None:
        specs["farl"] = str(model.init_weights)
    return {
        source: fetch_weights(spec, model.arch, what=f"{source} weights")
        for source, spec in sorted(specs.items())
    }


def check_roots(params: ReproductionParams, needed: set[str]) -> dict[str, Path]:
    """Real dataset roots that exist, one for every dataset the plan needs unless synthetic
    data stands in; raises ClefError naming the first bad one."""
    unknown = sorted(set(params.roots) - set(DATASETS))
    if unknown:
        raise ClefError(
            f"roots: unknown dataset {', '.join(unknown)}; known: {', '.join(DATASETS)}"
        )
    for name, root in sorted(params.roots.items()):
        if symlink_loop(Path(root)):  # exists() says False for it too
            raise ClefError(f"{name}: dataset root: symlink loop at {root}")
        if not Path(root).exists():
            raise ClefError(f"{name}: dataset root {root} does not exist")
    missing = sorted(d for d in needed if d not in params.roots)
    if missing and not params.synthetic:
        raise ClefError(
            f"no root given for {', '.join(missing)} (synthetic is off): pass roots "
            f"{{name: path}} for each, or synthetic=true"
        )
    return {name: Path(root) for name, root in params.roots.items()}


@dataclass(frozen=True)
class Reproduction:
    """What a reproduction trains, in what order and with which weights: a config per row
    (the full method first, then each ablation row), each row's units in dependency order,
    the real roots given and every dataset needed."""

    configs: dict[str, ExperimentConfig]
    plans: dict[str, list[Unit]]
    roots: dict[str, Path]
    needed: set[str]

    @property
    def main(self) -> ExperimentConfig:
        return self.configs[MAIN]


def plan_reproduction(params: ReproductionParams) -> Reproduction:
    """Everything the parameters decide, checked before any work (and before Ray starts):
    the configs (preset, overrides, datasets, folds, weights), their plans and the real
    roots. The flow, `clef reproduce` and the tests call this; raises ClefError."""
    cfgs = configs(params)
    plans = {name: plan(cfg) for name, cfg in cfgs.items()}
    needed = needed_datasets(params, plans)
    return Reproduction(cfgs, plans, check_roots(params, needed), needed)


def needed_datasets(params: ReproductionParams, plans: dict[str, list[Unit]]) -> set[str]:
    """The datasets the plans train on, and those the zero-shot experiments read."""
    needed = set().union(*(datasets_of(units) for units in plans.values()))
    return needed | (zeroshot_datasets() if params.zeroshot else set())
