"""The packages' boundaries and import-time behaviour.

Layers, lowest first (DESIGN.md): `clef_core.common`; `faces` (the face front end) and
`clef_core.method` (plain torch); `preprocessing` (datasets into shards) and
`clef_core.training` / `clef_core.tracking` / `clef_core.inference` (training and tracking
never import each other); `clef_core.run` (their composition); `synthetic` (a data source
writing the real layouts); `flows` and `bench` on top. Every import in a module's
source counts, lazy ones inside functions too: a module may import only the packages its
layer lists. In a fresh interpreter: the method imports no Ray, MLflow or Prefect, and
importing every module changes no environment variable, import hook, thread count or
matplotlib backend (entry points do that)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("clef_core", "faces", "preprocessing", "synthetic", "flows", "bench")
# What each package may import of the project (itself always). `clef_core` alone is the root
# package (its version); flows and bench may import anything.
ALLOWED: dict[str, set[str]] = {
    "clef_core": set(),
    "clef_core.common": {"clef_core"},
    "faces": {"clef_core", "clef_core.common"},
    "clef_core.method": {"clef_core", "clef_core.common"},
    "preprocessing": {"clef_core", "clef_core.common", "faces"},
    "clef_core.inference": {"clef_core", "clef_core.common", "clef_core.method", "faces"},
    "clef_core.training": {"clef_core", "clef_core.common", "clef_core.method"},
    "clef_core.tracking": {"clef_core", "clef_core.common", "clef_core.method"},
    # The composition of the two (a unit trained, scored and recorded), which flows call.
    "clef_core.run": {
        "clef_core",
        "clef_core.common",
        "clef_core.method",
        "clef_core.training",
        "clef_core.tracking",
    },
    "synthetic": {"clef_core", "clef_core.common", "faces", "preprocessing"},
}


def layer(module: str) -> str:
    """The package a dotted module name belongs to: `clef_core.<sub>` or the top-level name."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "clef_core" and len(parts) > 1 else parts[0]


def project_imports(source: str) -> set[str]:
    """Every absolute import of a project module in `source`, at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found |= {n for n in names if n.split(".")[0] in PROJECT}
    return found


def upward_imports(root: Path = ROOT) -> list[str]:
    """`file: imported` for each import that breaks ALLOWED."""
    bad = []
    for top in ("clef_core", "faces", "preprocessing", "synthetic"):
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            own = layer(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            allowed = ALLOWED.get(own)
            assert allowed is not None, f"{path}: no layer for {own}; add it to ALLOWED"
            for name in sorted(project_imports(path.read_text())):
                if layer(name) != own and layer(name) not in allowed:
                    bad.append(f"{path.relative_to(root)}: {name}")
    return bad


def test_no_module_imports_up_its_layers() -> None:
    assert upward_imports() == []


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    """The rule can fail: a copy of a real faces module with a lazy import of preprocessing."""
    for top in ("clef_core", "faces", "preprocessing", "synthetic"):
        (tmp_path / top).mkdir()
    bad = tmp_path / "faces" / "align.py"
    bad.write_text(
        (ROOT / "faces" / "align.py").read_text()
        + "\n\ndef f():\n    from preprocessing.pipeline import plan\n"
    )
    assert upward_imports(tmp_path) == ["faces/align.py: preprocessing.pipeline"]


def test_nothing_in_clef_core_imports_preprocessing() -> None:
    """The face front end left preprocessing (issue #29): clef_core sees `faces` directly."""
    hits = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "clef_core").rglob("*.py")
        if any(layer(n) == "preprocessing" for n in project_imports(p.read_text()))
    ]
    assert hits == []


# At run time too: importing preprocessing and faces loads none of these.
NOT_FOR_PREPROCESSING = (
    "clef_core.training", "clef_core.tracking", "clef_core.inference", "clef_core.run",
)  # fmt: skip


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
        import faces, preprocessing
        for root in (faces, preprocessing):
            for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
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
        # prefect.main adds its AliasedModuleFinder; sklearn sets KMP_DUPLICATE_LIB_OK and
        # KMP_INIT_AT_FORK (this test passed in the full suite only because an earlier test
        # had imported it into the parent process, whose environment this one inherits)
        for name in ("ray", "ray.data", "ray.train.torch", "prefect", "mlflow", "open_clip",
                     "prefect.main", "sklearn"):
            importlib.import_module(name)
        before = state()
        for package in ("clef_core", "faces", "preprocessing", "synthetic", "flows"):
            root = importlib.import_module(package)
            for info in pkgutil.walk_packages(root.__path__, package + "."):
                importlib.import_module(info.name)
        print(json.dumps(changed | diff(before, state())))
        """
    )
    assert changed == {}
