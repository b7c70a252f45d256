"""The dataset registry (`clef_core.common.datasets`) is the one place that knows each dataset:
a record added to it (with its reader file) reaches every consumer (config, protocol, text,
paper figures, report, stage-1 selection, fold parts, readers, synthetic roots), no other
module spells a dataset's name, and contradictory records are refused."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clef_core.common.datasets import REGISTRY, Dataset, register, synth_layouts
from clef_core.common.errors import ClefError

REPO = Path(__file__).resolve().parents[2]

NEW_READER = """
from clef_core.common.datasets import REGISTRY
from preprocessing.readers.base import Reader


class NewReader(Reader):
    name = "newau"
    au_ids = REGISTRY[name].au_ids

    def sequences(self):
        return []

    def frames(self, seq, reduce=1):
        return iter(())
"""

NEW_RECORD = """
from clef_core.common.datasets import Dataset, StartFrom, register

register(Dataset(
    "newau", "au", "newau_reader:NewReader", au_ids=(1, 2, 12),
    parts=(("S1", "S2"), ("S3",), ("S4",), ("S5",), ("S6",)),
    activities={"T1": "Talk.", "T2": "Listen."}, paper_activities=frozenset({"T1"}),
    stage1_rows="sampled", start=StartFrom(2, "bp4d"), paper_lr=3e-4, paper_table=9,
    paper_mean=50.0, paper_au_f1={1: 40.0, 2: 50.0, 12: 60.0}, paper_note="A note.",
    synth="newau", synth_folder="NewAU", synth_writer="synthetic.layouts.disfa",
))
"""


def test_a_new_record_and_reader_file_reach_every_consumer(tmp_path: Path) -> None:
    """In a fresh interpreter: the record is registered first, then every module that reads
    the registry is imported and asked about the new dataset."""
    (tmp_path / "newau_reader.py").write_text(NEW_READER)
    code = NEW_RECORD + textwrap.dedent(
        """
        import json
        from clef_core.method.config import DATASETS, ProtocolConfig, Stage2Config
        from clef_core.method.text import ACTIVITIES, FROM_THE_PAPER
        from clef_core.tracking import paper
        from clef_core.training import protocol, selection
        from preprocessing import folds
        from preprocessing.readers import READERS
        from synthetic import generate, spec

        unit = protocol.stage2_unit("newau", 5, True)
        print(json.dumps({
            "config": ["newau" in DATASETS, "newau" in ProtocolConfig().datasets,
                       Stage2Config().lr_for("newau")],
            "text": [ACTIVITIES["newau"], sorted(t for d, t in FROM_THE_PAPER if d == "newau")],
            "protocol": [protocol.AU_FOLDS["newau"], protocol.folds_of("newau", None),
                         list(unit.train_parts), list(unit.test_parts), unit.init.name,
                         protocol.PAPER["newau"]],
            "paper": [paper.AU_F1["newau"], paper.AU_MEAN["newau"]],
            "selection": selection.policy_of("newau"),
            "folds": [folds.part_of("newau", "S3"), folds.pick_subjects("newau", 6)],
            "reader": [READERS["newau"].__name__, list(READERS["newau"].au_ids)],
            "synth": ["newau" in spec.SYNTH_DATASETS, spec.ROOT_NAMES["newau"],
                      spec.READER_ROOTS["newau"], generate.WRITERS["newau"].__name__],
        }))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{REPO}"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {
        "config": [True, True, 3e-4],
        "text": [{"T1": "Talk.", "T2": "Listen."}, ["T1"]],
        "protocol": [5, [1, 2, 3, 4, 5], [0, 1, 2, 3], [4], "s2-bp4d-fold5", 50.0],
        "paper": [{"1": 40.0, "2": 50.0, "12": 60.0}, 50.0],
        "selection": "sampled",
        "folds": [1, ["S1", "S3", "S4", "S5", "S6", "S2"]],
        "reader": ["NewReader", [1, 2, 12]],
        "synth": [True, "NewAU", "NewAU", "synthetic.layouts.disfa"],
    }


# Where a dataset's name may still be written: the registry, the readers and the synthetic
# layouts (each is about its own dataset), and these choices, which are not facts about a
# dataset (file -> the names it may use).
OWN_FILES = (
    "clef_core/common/datasets.py",
    "preprocessing/readers/",
    "synthetic/layouts/",
)
CHOICES = {
    "clef_core/training/protocol.py": {"rafdb", "ferplus", "bp4d"},  # the zero-shot datasets
    "clef_core/tracking/paper.py": {"bp4d", "rafdb", "ferplus"},  # Table 6; the poster
    "flows/serve.py": {"bp4d"},  # the smoke deployment trains on BP4D
    "synthetic/spec.py": {"videos"},  # the option `videos` (a count), not the layout
}


def test_no_module_outside_the_registry_spells_a_dataset_name() -> None:
    """Every string constant of clef_core, preprocessing and flows (docstrings and messages
    aside: only a whole-string name counts) that names a dataset or a synthetic layout."""
    names = set(REGISTRY) | set(synth_layouts())
    found: dict[str, set[str]] = {}
    for package in ("clef_core", "preprocessing", "flows"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith(OWN_FILES):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.setdefault(rel, set()).add(node.value)
    extra = {f: sorted(n - CHOICES.get(f, set())) for f, n in found.items()}
    assert {f: n for f, n in extra.items() if n} == {}


def test_contradictory_records_are_refused() -> None:
    before = dict(REGISTRY)
    with pytest.raises(ClefError, match="registered twice"):
        register(Dataset("bp4d", "au", "x:Y", au_ids=(1,)))
    with pytest.raises(ClefError, match="an AU dataset has au_ids"):
        register(Dataset("noaus", "au", "x:Y"))
    with pytest.raises(ClefError, match="two folders or writers"):
        register(
            Dataset("an9", "fer", "x:Y", classes=("a",), synth="affectnet", synth_folder="AN9")
        )
    assert before == REGISTRY
