"""Shared test set-up: services write under a temporary home; one synthetic dataset per session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clef_core.common.manifest import Manifest
from clef_core.common.runtime import configure_process

configure_process()  # the tests are an entry point: the service environment, as `clef` sets it
_HOME = tempfile.mkdtemp(prefix="clef-tests-")
os.environ.setdefault("PREFECT_HOME", os.path.join(_HOME, "prefect"))
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_HOME}/mlflow.db")
os.environ.setdefault("CLEF_DATA_DIR", os.path.join(_HOME, "data"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a local Ray instance is a `server` test (left out of make
    test-fast), whether or not its module says so."""
    for item in items:
        if "local_ray" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `test` preset of the synthetic generator, every layout, generated once."""
    from synthetic.generate import generate
    from synthetic.spec import make_spec

    out = tmp_path_factory.mktemp("synth")
    generate(make_spec(out, "test", workers=2), show_progress=False)
    return out


def run_inline(
    dataset: str, root: Path, out: Path, image_size: int = 112, **options: Any
) -> tuple[list[dict], Manifest]:
    """The preprocessing pipeline without Ray (the Ray path is tested through the CLI)."""
    import pyarrow.parquet as pq

    from preprocessing.pipeline import PreprocessOptions, finish, plan, process_sequence

    opts = PreprocessOptions(
        dataset=dataset, root=root, shard_dir=out, image_size=image_size, **options
    )
    sequences, issues = plan(opts)
    results = [process_sequence(opts, s) for s in sequences]
    manifest = finish(opts, results, issues)
    rows = [
        r for shard in manifest.shards for r in pq.read_table(out / dataset / shard).to_pylist()
    ]
    return rows, manifest


@pytest.fixture(scope="session")
def shard_dir(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of every synthetic layout (112 px crops), built once per session."""
    from synthetic.spec import READER_ROOTS

    out = tmp_path_factory.mktemp("data") / "shards"  # <data_dir>/shards, as configs expect
    for dataset, folder in READER_ROOTS.items():
        if dataset != "affectnet7":
            run_inline(dataset, synth_root / folder, out)
    return out


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance as `clef` starts one, shut down after the module."""
    import ray

    from clef_core.common.runtime import init_ray

    init_ray(None)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
