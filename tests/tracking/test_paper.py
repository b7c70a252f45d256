"""The paper's figures typed into clef_core.tracking.paper: each per-AU row against the average the
paper states beside it (a typo in one cell moves the mean), and the tables against each other."""

from __future__ import annotations

import pytest

from clef_core.tracking import paper
from clef_core.training.protocol import PAPER


@pytest.mark.parametrize("dataset", ["bp4d", "disfa"])
def test_per_au_rows_average_to_the_stated_mean(dataset: str) -> None:
    per_au = paper.AU_F1[dataset]
    assert len(per_au) == (12 if dataset == "bp4d" else 8)
    assert sum(per_au.values()) / len(per_au) == pytest.approx(paper.AU_MEAN[dataset], abs=0.05)


def test_bp4d_plus_row_keeps_the_papers_own_inconsistency() -> None:
    # Table 4's CLEF cells sum to 752.5 (mean 62.7) while its Avg says 63.1: kept as printed.
    # Pinning the sum still catches a typo in any cell.
    per_au = paper.AU_F1["bp4d_plus"]
    assert len(per_au) == 12 and sum(per_au.values()) == pytest.approx(752.5)
    assert paper.AU_MEAN["bp4d_plus"] == 63.1


def test_table6_full_method_is_tables_2_and_5_and_rows_are_distinct() -> None:
    full = paper.TABLE6[-1]
    assert full.method == "CLEF" and full.name == "PA+PI+I+N+D"
    assert full.bp4d == paper.AU_MEAN["bp4d"] and full.rafdb == paper.FER_ACCURACY["rafdb"]
    assert len({(r.method, r.components) for r in paper.TABLE6}) == 12
    assert paper.components_of("PA+PI+N+D") == full.components
    assert paper.components_of("baseline") == frozenset({"I"})
    # Ours, not the paper's: the instance-pairing rows, their method SSL.
    assert paper.method_of("SSL+N+D") == "SSL" and paper.method_of("FaRL-I") == "FaRL"
    assert paper.method_of("PI+N+D") == "CLEF"
    assert [r.name for r in paper.OURS_ROWS] == ["SSL+I", "SSL+I+N+D"]


def test_protocol_quotes_the_same_means() -> None:
    assert PAPER == paper.MEANS


# --- The transcription against the paper's own text (when the file is there) ---------------


def _paper_text() -> str:
    """The paper's text: $CLEF_PAPER, or shared/paper/CLEF-ICCV2023.txt beside a folder above
    the repository (the project's layout: ../shared/paper)."""
    import os
    from pathlib import Path

    if os.environ.get("CLEF_PAPER"):
        return Path(os.environ["CLEF_PAPER"]).read_text()
    here = Path(__file__).resolve()
    for folder in here.parents:
        candidate = folder / "shared" / "paper" / "CLEF-ICCV2023.txt"
        if candidate.is_file():
            return candidate.read_text()
    pytest.skip("the paper's text (shared/paper/CLEF-ICCV2023.txt) is not on this machine")


def _cells(line: str) -> list[str]:
    """A table line's tab-separated cells without the bold / second-best marks."""
    import re

    return [re.sub(r"</?b>|[\[\]]", "", c).strip() for c in line.split("\t")]


def _table(text: str, number: int) -> list[list[str]]:
    """The rows (header first) of the paper's Table `number`: the tab-separated lines after
    its caption."""
    start = text.index(f"Table {number}: ", text.index("## 4. Experiments"))
    rows: list[list[str]] = []
    for line in text[start:].splitlines()[1:]:
        if "\t" in line:
            rows.append(_cells(line))
        elif rows and line.strip():  # the first non-table line after the rows
            break
    return rows


@pytest.mark.parametrize(("number", "dataset"), [(2, "bp4d"), (3, "disfa"), (4, "bp4d_plus")])
def test_per_au_rows_are_the_papers_text(number: int, dataset: str) -> None:
    header, *rows = _table(_paper_text(), number)
    clef = next(r for r in rows if r[0] == "CLEF")
    aus = [int(h.removeprefix("AU")) for h in header[1:-1]]
    assert paper.AU_F1[dataset] == dict(zip(aus, map(float, clef[1:-1]), strict=True))
    assert paper.AU_MEAN[dataset] == float(clef[-1])


def test_fer_accuracies_are_the_papers_table5() -> None:
    header, *rows = _table(_paper_text(), 5)
    clef = next(r for r in rows if r[0] == "CLEF")
    names = {"AN-7": "affectnet7", "AN-8": "affectnet8", "RAF-DB": "rafdb", "FER+": "ferplus"}
    assert header[1:] == list(names)
    assert {
        names[h]: float(v) for h, v in zip(header[1:], clef[1:], strict=True)
    } == paper.FER_ACCURACY


def test_table6_is_the_papers_text_row_by_row() -> None:
    header, *rows = _table(_paper_text(), 6)
    assert header == ["Methods", *paper.COMPONENTS, "BP4D", "RAF-DB"]
    printed = [
        (r[0], frozenset(c for c, tick in zip(paper.COMPONENTS, r[1:6], strict=True) if tick),
         float(r[6]), float(r[7]))
        for r in rows
    ]  # fmt: skip
    assert printed == [(r.method, r.components, r.bp4d, r.rafdb) for r in paper.TABLE6]


# --- The paper preset says when it cannot start where the paper starts -----------------------


def test_paper_preset_without_weights_warns_once_that_it_trains_from_scratch(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clef_core.method import config

    monkeypatch.setattr(config, "_warned", set())
    with caplog.at_level("WARNING"):
        config.load_config("paper")
        config.load_config("paper", ["seed=1"])  # every row and command loads it again
    lines = [r.getMessage() for r in caplog.records if "FROM SCRATCH" in r.getMessage()]
    assert lines == [config.FROM_SCRATCH] and "\n" not in lines[0]
    assert "FaRL" in lines[0] and "model.init_weights" in lines[0]
    monkeypatch.setattr(config, "_warned", set())
    caplog.clear()
    with caplog.at_level("WARNING"):
        config.load_config("paper", ["model.init_weights=/weights/farl.pt"])
        config.load_config("cpu-tiny")  # the small CPU model is meant to train from scratch
    assert not [r for r in caplog.records if "FROM SCRATCH" in r.getMessage()]


def test_the_command_line_prints_the_warning_as_one_line() -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "flows.cli", "config", "show", "paper"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert [line for line in run.stderr.splitlines() if line.strip()] == [
        line for line in run.stderr.splitlines() if "FROM SCRATCH" in line
    ] and run.stderr.count("FROM SCRATCH") == 1
