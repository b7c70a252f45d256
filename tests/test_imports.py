"""The packages' boundaries and import-time behaviour, each in a fresh interpreter: the method
modules import no Ray, MLflow or Prefect; `preprocessing` imports none of `clef_core`'s
training, tracking or inference modules; importing every module of every package changes no
environment variable, import hook, thread count or matplotlib backend (entry points do that)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# The method is every module of clef_core.method: plain torch code.
# clef_core's training, tracking and inference packages: preprocessing needs none of them.
NOT_FOR_PREPROCESSING = ("clef_core.training", "clef_core.tracking", "clef_core.inference")


def in_fresh_python(code: str) -> dict:
    """Run `code` (which prints one JSON line last) in a new interpreter; its JSON."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_method_modules_import_no_ray_mlflow_or_prefect() -> None:
    found = in_fresh_python(
        """
        import importlib, json, pkgutil, sys
        import clef_core.method
        names = [i.name for i in pkgutil.walk_packages(clef_core.method.__path__, "clef_core.method.")]
        assert len(names) >= 11, names
        for name in names:
            importlib.import_module(name)
        heavy = sorted({m.split(".")[0] for m in sys.modules} & {"ray", "mlflow", "prefect"})
        print(json.dumps(heavy))
        """
    )
    assert found == []


def test_preprocessing_imports_no_training_tracking_or_inference() -> None:
    found = in_fresh_python(
        f"""
        import importlib, json, pkgutil, sys
        import preprocessing
        for info in pkgutil.walk_packages(preprocessing.__path__, "preprocessing."):
            importlib.import_module(info.name)
        print(json.dumps(sorted(
            m for m in sys.modules if m.startswith({NOT_FOR_PREPROCESSING!r})
        )))
        """
    )
    assert found == []


def test_importing_every_module_sets_nothing_for_the_process() -> None:
    """Third-party libraries set some things at their import (open_clip's tokenizer sets
    TOKENIZERS_PARALLELISM, Prefect adds an import finder): they are imported first, so the
    difference measured is our modules' own."""
    changed = in_fresh_python(
        """
        import importlib, json, os, pkgutil, sys

        def state():
            import cv2, matplotlib, torch

            return {
                "environ": dict(os.environ),
                "meta_path": [getattr(f, "__name__", type(f).__name__) for f in sys.meta_path],
                "cv2_threads": cv2.getNumThreads(),
                "torch_threads": torch.get_num_threads(),
                # the raw setting: reading rcParams["backend"] would resolve it
                "backend": str(dict.__getitem__(matplotlib.rcParams, "backend")),
            }

        def diff(before, after):
            out = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
            if "meta_path" in out:
                old, new = out["meta_path"]
                out["meta_path"] = {"added": [f for f in new if f not in old],
                                    "removed": [f for f in old if f not in new]}
            if "environ" in out:
                old, new = out["environ"]
                out["environ"] = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            return out

        start = state()
        from clef_core.common.runtime import prepare_torchvision

        changed = diff(start, state())
        prepare_torchvision()  # what the modules importing open_clip call first
        for name in ("ray", "ray.data", "ray.train.torch", "prefect", "mlflow", "open_clip",
                     "prefect.main"):  # prefect.main adds its AliasedModuleFinder
            importlib.import_module(name)
        before = state()
        for package in ("clef_core", "preprocessing", "flows"):
            root = importlib.import_module(package)
            for info in pkgutil.walk_packages(root.__path__, package + "."):
                importlib.import_module(info.name)
        print(json.dumps(changed | diff(before, state())))
        """
    )
    assert changed == {}
