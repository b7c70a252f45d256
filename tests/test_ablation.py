"""Table 6: every row of the paper by name (`clef reproduce --ablation NAME / all`), each
switching the paper's components through config, each starting from its row's weights
(CLIP rows from CLIP's, the rest from FaRL's, none given: from scratch), and the planned
trainings of each row. The report's layout: tests/test_report.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from clef_core import paper
from clef_core.config import ABLATIONS, ablation_names, load_config
from clef_core.errors import ClefError
from flows.clef_flow import ReproductionParams, checked


def _params(tmp: Path, **kw: object) -> ReproductionParams:
    return ReproductionParams(preset="cpu-tiny", datasets=["bp4d"], folds=[1], data_dir=tmp, **kw)  # type: ignore[arg-type]


def test_every_paper_row_has_one_name_and_all_names_them(tmp_path: Path) -> None:
    named = {(n.split("-")[0] if "-" in n else "CLEF", paper.components_of(n)) for n in ABLATIONS}
    assert named == {(r.method, r.components) for r in paper.TABLE6}
    assert ablation_names(["all"]) == list(ABLATIONS)
    assert ablation_names(["N+D", "baseline", "PA+PI+N"]) == ["FaRL-I", "FaRL-I+N+D", "PA+PI+N"]
    cfgs, plans, _ = checked(_params(tmp_path, ablations=["all"]))
    assert list(cfgs) == ["PA+PI+N+D", *(n for n in ABLATIONS if n != "PA+PI+N+D")]
    for name, cfg in cfgs.items():
        comps = paper.components_of(name)
        stages = {u.stage for u in plans[name]}
        assert (1 in stages) == (cfg.stage1.epochs > 0) == ("PI" in comps), name
        pa = cfg.stage1.epochs > 0 and cfg.stage1.weight_image_activity > 0
        assert pa == ("PA" in comps), name
        assert (cfg.stage2.head == "names") == ("N" in comps), name
        assert (cfg.stage2.weight_dn > 0) == ("D" in comps), name
        assert cfg.model.init_weights is None  # no weights given: every row from scratch
    # The rows' only differences from the preset are their components' switches.
    assert cfgs["PA+PI+N+D"].stage2 == load_config("cpu-tiny").stage2


def test_each_row_starts_from_its_sources_weights(tmp_path: Path) -> None:
    clip, farl = tmp_path / "openai-b16.pt", tmp_path / "farl.pt"
    clip.write_bytes(b"x")
    farl.write_bytes(b"x")
    cfgs, _, _ = checked(_params(tmp_path, ablations=["all"], weights={"clip": clip}))
    assert {n: c.model.init_weights for n, c in cfgs.items() if c.model.init_weights} == {
        "CLIP-I": clip, "CLIP-I+N": clip, "CLIP-I+N+D": clip,
    }  # fmt: skip
    # FaRL's file from --weights farl=, or the config's model.init_weights; never for CLIP.
    for kw in ({"weights": {"farl": farl}}, {"overrides": [f"model.init_weights={farl}"]}):
        cfgs, _, _ = checked(_params(tmp_path, ablations=["all"], **kw))
        for name, cfg in cfgs.items():
            assert cfg.model.init_weights == (None if name.startswith("CLIP") else farl), name


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"ablations": ["PA+N"]}, "unknown ablation 'PA+N'; known: all, CLIP-I"),
        ({"weights": {"openai": Path("x")}}, "weights: unknown source openai"),
        ({"weights": {"clip": Path("/nowhere/clip.pt")}}, "clip weights file /nowhere"),
    ],
)
def test_a_bad_row_or_weights_fails_with_one_message(
    tmp_path: Path, kw: dict[str, object], message: str
) -> None:
    with pytest.raises(ClefError, match=message.replace("+", r"\+")):
        checked(_params(tmp_path, **kw))
