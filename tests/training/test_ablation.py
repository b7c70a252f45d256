"""Table 6: every row of the paper by name (`clef reproduce --ablation NAME / all`), each
switching the paper's components through config, each starting from its row's weights
(CLIP rows from CLIP's, the rest from FaRL's, none given: from scratch), and the planned
trainings of each row; one row (PI) trained in-process and scored by the flow's evaluation
step. The report's layout: tests/test_report.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clef_core.common.errors import ClefError
from clef_core.method.config import ABLATIONS, ablation_names, load_config
from clef_core.run.reproduction import ReproductionParams, plan_reproduction
from clef_core.tracking import paper


def _params(tmp: Path, **kw: object) -> ReproductionParams:
    return ReproductionParams(preset="cpu-tiny", datasets=["bp4d"], folds=[1], data_dir=tmp, **kw)  # type: ignore[arg-type]


def test_every_paper_row_has_one_name_and_all_names_them(tmp_path: Path) -> None:
    named = {(paper.method_of(n), paper.components_of(n)) for n in ABLATIONS}
    ours = {(r.method, r.components) for r in paper.OURS_ROWS}  # SSL, SSL+N+D: no paper figure
    assert named == {(r.method, r.components) for r in paper.TABLE6} | ours and len(ours) == 2
    assert all(r.bp4d is None and r.rafdb is None for r in paper.OURS_ROWS)
    assert ablation_names(["all"]) == list(ABLATIONS)
    assert ablation_names(["SSL+N+D", "PI"]) == ["PI", "SSL+N+D"]
    assert ablation_names(["N+D", "baseline", "PA+PI+N"]) == ["FaRL-I", "FaRL-I+N+D", "PA+PI+N"]
    planned = plan_reproduction(_params(tmp_path, ablations=["all"]))
    cfgs, plans = planned.configs, planned.plans
    assert list(cfgs) == ["PA+PI+N+D", *(n for n in ABLATIONS if n != "PA+PI+N+D")]
    for name, cfg in cfgs.items():
        comps = paper.components_of(name)
        stages = {u.stage for u in plans[name]}
        assert (1 in stages) == (cfg.stage1.epochs > 0) == bool({"PI", "SSL"} & comps), name
        pa = cfg.stage1.epochs > 0 and cfg.stage1.weight_image_activity > 0
        assert pa == ("PA" in comps), name
        assert (cfg.stage1.pairing == "instance") == ("SSL" in comps), name
        assert (cfg.stage2.head == "names") == ("N" in comps), name
        assert (cfg.stage2.weight_dn > 0) == ("D" in comps), name
        assert cfg.model.init_weights is None  # no weights given: every row from scratch
    # The rows' only differences from the preset are their components' switches.
    assert cfgs["PA+PI+N+D"].stage2 == load_config("cpu-tiny").stage2


def test_each_row_starts_from_its_sources_weights(tmp_path: Path) -> None:
    clip, farl = tmp_path / "openai-b16.pt", tmp_path / "farl.pt"
    clip.write_bytes(b"x")
    farl.write_bytes(b"x")
    cfgs = plan_reproduction(_params(tmp_path, ablations=["all"], weights={"clip": clip})).configs
    assert {n: c.model.init_weights for n, c in cfgs.items() if c.model.init_weights} == {
        "CLIP-I": clip, "CLIP-I+N": clip, "CLIP-I+N+D": clip,
    }  # fmt: skip
    # FaRL's file from --weights farl=, or the config's model.init_weights; never for CLIP.
    for kw in ({"weights": {"farl": farl}}, {"overrides": [f"model.init_weights={farl}"]}):
        cfgs = plan_reproduction(_params(tmp_path, ablations=["all"], **kw)).configs
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
        plan_reproduction(_params(tmp_path, **kw))


@pytest.fixture(scope="module")
def data_dir(shard_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir over the session's synthetic shards (its decoded cache written here)."""
    data = tmp_path_factory.mktemp("ablation")
    (data / "shards").symlink_to(shard_dir)
    return data


SHORT = ["stage1.steps_per_epoch=4", "stage2.steps_per_epoch=6", "stage1.batch_size=16",
         "stage2.batch_size=16"]  # fmt: skip


def test_stage1_then_a_linear_head_trains_and_the_evaluation_step_agrees(
    data_dir: Path, tmp_path: Path
) -> None:
    """Row PI (stage 1 on images, then the image encoder's linear head: no text in stage 2),
    a combination only Table 6 has, trained in-process; its checkpoint scored by the flow's
    evaluation step (`evaluation_step`) gives the training's own held-out metrics."""
    import torch

    from clef_core.common.results import UnitResult
    from clef_core.method.checkpoint import save_checkpoint
    from clef_core.method.config import ablation_overrides
    from clef_core.method.labels import LabelSpace
    from clef_core.run.evaluate import evaluation_step
    from clef_core.training.heldout import read_predictions
    from clef_core.training.local import run_local_stage
    from clef_core.training.protocol import Unit

    torch.set_num_threads(2)
    cfg = load_config("cpu-tiny", [*ablation_overrides("PI"), f"data.data_dir={data_dir}", *SHORT])
    assert cfg.stage1.weight_image_activity == 0 and cfg.stage2.head == "linear"
    s1 = run_local_stage(cfg, 1, "bp4d", (1, 2))
    s2 = run_local_stage(cfg, 2, "bp4d", (1, 2), (0,), init=s1.model)
    assert s2.model.head is not None and s2.metrics is not None and s2.predictions is not None
    assert np.isfinite(s1.losses).all() and np.isfinite(s2.losses).all()
    space = LabelSpace.aus([1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24])
    checkpoint = save_checkpoint(tmp_path / "checkpoint", s2.model, cfg, 2, 6, 1, space)
    unit = Unit(2, "bp4d", 1)  # trains on parts 1, 2; tests on part 0
    trained = UnitResult(unit.name, 2, "bp4d", 1, "key", str(checkpoint), {})
    metrics = evaluation_step(cfg, unit, trained).metrics  # into tmp_path / "evaluation"
    for key in ("f1_mean", "f1_baseline_mean", "auc_mean", "f1_au12"):
        assert metrics[key] == pytest.approx(s2.metrics[key], abs=1e-6), key
    pred, _, meta = read_predictions(tmp_path / "evaluation" / "predictions.parquet")
    assert len(pred.scores) == len(s2.predictions.scores) and meta["test_parts"] == [0]
    assert (tmp_path / "evaluation" / "metrics.json").is_file()
