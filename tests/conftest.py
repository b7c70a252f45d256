"""Shared test set-up: every service writes under a temporary home, never ~/."""

from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="clef-tests-")
os.environ.setdefault("PREFECT_HOME", os.path.join(_HOME, "prefect"))
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_HOME}/mlflow.db")
os.environ.setdefault("CLEF_DATA_DIR", os.path.join(_HOME, "data"))
