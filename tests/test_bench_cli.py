"""Every benchmark runs as a module from the repository root, `python -m bench.<name>` (its
`--help` here: nothing measured), and none of the project's code edits `sys.path` to find
another module (package imports: `from bench.common import ...`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("ablation", "label_efficiency", "probes", "train_speed", "preprocess_speed",
           "predict_speed", "synth_speed", "gpu_train")  # fmt: skip


def test_every_benchmark_is_a_module_of_the_bench_package() -> None:
    found = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"__init__", "common"}
    found |= {p.parent.name for p in (ROOT / "bench").glob("*/__main__.py")}
    assert found == set(BENCHES)


@pytest.mark.parametrize("name", BENCHES)
def test_runs_as_a_module(name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("usage:") and "--help" in out.stdout, out.stdout[:500]


def _is_sys_path(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def sys_path_edits(source: str) -> list[int]:
    """Lines that change sys.path: its insert/append/extend/... or an assignment to it."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _is_sys_path(node.value):
            lines.append(node.lineno)  # sys.path.insert(...) and the like
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if _is_sys_path(t) or (isinstance(t, ast.Subscript) and _is_sys_path(t.value)):
                    lines.append(node.lineno)
    return sorted(lines)


def test_no_code_edits_sys_path() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{line}"
        for top in ("bench", "clef_core", "faces", "preprocessing", "synthetic", "flows")
        for path in sorted((ROOT / top).rglob("*.py"))
        for line in sys_path_edits(path.read_text())
    ]
    assert hits == []


def test_a_sys_path_edit_is_found() -> None:
    """The rule can fail: the line bench/label_efficiency.py had before issue #29."""
    source = "import sys\nsys.path.insert(0, 'bench')\nprint(sys.path)\nsys.path += ['x']\n"
    assert sys_path_edits(source) == [2, 4]
