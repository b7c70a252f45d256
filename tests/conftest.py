"""Shared test set-up: services write under a temporary home; one synthetic dataset per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="clef-tests-")
os.environ.setdefault("PREFECT_HOME", os.path.join(_HOME, "prefect"))
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_HOME}/mlflow.db")
os.environ.setdefault("CLEF_DATA_DIR", os.path.join(_HOME, "data"))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `test` preset of the synthetic generator, every layout, generated once."""
    from preprocessing.synth.generate import generate
    from preprocessing.synth.spec import make_spec

    out = tmp_path_factory.mktemp("synth")
    generate(make_spec(out, "test", workers=2), show_progress=False)
    return out
