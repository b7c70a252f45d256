"""What the training benchmarks (`bench.ablation`, `bench.label_efficiency`, `bench.probes`)
share: their common flags, the BP4D shards they train on, the mean +- sd over seeds, the merge
of several runs' JSON (one process per seed, run side by side), markdown tables, and one MLflow
parent run with a nested run per row and seed."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

# --- flags -------------------------------------------------------------------------------------


def entry(parse: Callable[[list[str] | None], T], argv: list[str] | None) -> T:
    """A benchmark's start: the service environment, as `clef` sets it (an entry point), then
    its flags."""
    from clef_core.common.runtime import configure_process

    configure_process()
    return parse(argv)


def parser(doc: str | None, out: str) -> argparse.ArgumentParser:
    """A training benchmark's parser, described by its docstring's first line, with the flags
    they all take; `out`: the default output folder."""
    p = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fold", type=int, default=1, choices=[1, 2, 3])
    p.add_argument("--set", dest="sets", action="append", default=[])
    p.add_argument("--out", type=Path, default=Path(out))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mlflow-uri", default=None, help="default: SQLite in the data dir")
    return p


def prepare(args: argparse.Namespace) -> None:
    """torch's threads (`--threads`) and the data dir (`--data-dir`, resolved as `clef` does)."""
    import torch

    from clef_core.common.runtime import use_data_dir

    torch.set_num_threads(args.threads)
    args.data_dir = use_data_dir(args.data_dir)


# --- data --------------------------------------------------------------------------------------


def ensure_shards(data_dir: Path) -> Path:
    """The BP4D shards under data_dir (made in-process from the synthetic data if absent)."""
    shards = data_dir / "shards"
    if (shards / "bp4d" / "manifest.json").is_file():
        return shards
    from preprocessing.pipeline import PreprocessOptions, finish, plan, process_sequence
    from synthetic.generate import generate
    from synthetic.spec import make_spec

    synth = data_dir / "synthetic"
    if not (synth / "BP4D").is_dir():
        generate(make_spec(synth, "demo", datasets=("bp4d",)), show_progress=True)
    opts = PreprocessOptions("bp4d", synth / "BP4D", shards)
    sequences, issues = plan(opts)
    finish(opts, [process_sequence(opts, s) for s in sequences], issues)
    return shards


# --- statistics and tables ---------------------------------------------------------------------


def mean_sd(values: list[float]) -> tuple[float, float]:
    """The mean and the sample sd (ddof 1; NaN for one value)."""
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return float(np.mean(values)), sd


def pm(mean: float, sd: float, digits: int) -> str:
    """The mean and its sd over seeds (one seed has no sd: its mean alone)."""
    text = f"{mean:.{digits}f}"
    return text if math.isnan(sd) else f"{text} +- {sd:.{digits}f}"


def table_lines(header: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    """A markdown table: the header, its rule and a line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def table(caption: str, header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """A caption line, a blank line and the table."""
    return "\n".join([caption, "", *table_lines(header, rows)]) + "\n"


def save_figure(fig: Any, path: Path, dpi: int) -> Path:
    """A matplotlib figure laid out, saved as `path` (its folder made) and closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


# --- merging runs ------------------------------------------------------------------------------


def merge_runs(into: dict[str, Any], runs: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts ending in lists of runs: `runs`' lists appended to `into`'s, keys in the
    order first met; an empty list (a partial run's part not reached) adds nothing."""
    for key, value in runs.items():
        if isinstance(value, dict):
            inner = merge_runs(into.get(key, {}), value)
            if inner:
                into[key] = inner
        elif value:
            into.setdefault(key, []).extend(value)
    return into


def read_merged(paths: Iterable[Path], key: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The runs under `key` of each JSON file, merged (`merge_runs`), and each file's data."""
    data = [json.loads(path.read_text()) for path in paths]
    merged: dict[str, Any] = {}
    for d in data:
        merge_runs(merged, d[key])
    return merged, data


# --- MLflow ------------------------------------------------------------------------------------


class Parent:
    """One MLflow parent run (`<prefix>-<time>`) in `experiment`, made if absent, at
    `--mlflow-uri` (default: SQLite in the data dir), with nested runs under it."""

    def __init__(self, args: argparse.Namespace, experiment: str, prefix: str) -> None:
        from mlflow import MlflowClient

        from clef_core.common.runtime import default_tracking_uri

        self.uri = args.mlflow_uri or default_tracking_uri(args.data_dir)
        self.client = MlflowClient(self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        name = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.run_id = self.client.create_run(self.exp_id, run_name=name).info.run_id

    def log_params(self, params: dict[str, Any], run_id: str | None = None) -> None:
        for key, value in params.items():
            self.client.log_param(run_id or self.run_id, key, value)

    def log_metric(self, key: str, value: float) -> None:
        self.client.log_metric(self.run_id, key, value)

    def log_artifacts(self, folder: Path, names: Iterable[str]) -> None:
        for name in names:
            self.client.log_artifact(self.run_id, str(folder / name))

    def start_nested(self, name: str, tags: dict[str, str] | None = None) -> str:
        """A nested run (its id), started now."""
        tags = {"mlflow.parentRunId": self.run_id, **(tags or {})}
        return self.client.create_run(self.exp_id, run_name=name, tags=tags).info.run_id

    def end_nested(self, run_id: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """The nested run's params and metrics, and its end."""
        self.log_params(params, run_id)
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, value)
        self.client.set_terminated(run_id)

    def nested(
        self, name: str, tags: dict[str, str], params: dict[str, Any], metrics: dict[str, float]
    ) -> None:
        """A nested run of results already measured."""
        self.end_nested(self.start_nested(name, tags), params, metrics)

    @contextmanager
    def running(self) -> Iterator[Parent]:
        """The parent run ends FINISHED, or FAILED when the block raises (and it raises on)."""
        try:
            yield self
        except BaseException:
            self.client.set_terminated(self.run_id, "FAILED")
            raise
        self.client.set_terminated(self.run_id)
