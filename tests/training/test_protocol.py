"""The protocol as data: folds and their parts, what each unit starts from, the order units
run in, unit keys (which settings invalidate a cached result and which do not), and a fold part
without rows refused while a stage is planned."""

from __future__ import annotations

from pathlib import Path

import pytest

from clef_core.common.errors import ClefError
from clef_core.common.manifest import Manifest
from clef_core.method.config import load_config
from clef_core.training.protocol import Unit, folds_of, plan, stage2_unit, unit_key
from clef_core.training.stages import StageJob, plan_stage

REPO = Path(__file__).resolve().parents[2]


def _manifest(dataset: str) -> Manifest:
    """A manifest of 100 rows (a unit key reads its `content_digest`)."""
    return Manifest(
        dataset=dataset, au_ids=[], classes=[], rows=100, rows_per_subject={}, rows_per_task={},
        rows_per_part={}, no_face=0, decode_reduction={}, unreadable=0, unreadable_examples=[],
        failed_sequences=[], issues=[], shards={}, source_root="/data", input_hash=f"h-{dataset}",
        code_version="0", image_size=112, options={"jpeg_quality": "95", "force": "False"},
    )  # fmt: skip


MANIFESTS = {
    d: _manifest(d)
    for d in ("bp4d", "bp4d_plus", "disfa", "rafdb", "affectnet7", "affectnet8", "ferplus")
}


def test_fold_parts_are_subject_exclusive_and_cover_the_dataset() -> None:
    for dataset, n in (("bp4d", 3), ("bp4d_plus", 4), ("disfa", 3)):
        tested = []
        for k in folds_of(dataset, None):
            unit = Unit(2, dataset, k)
            assert unit.test_parts is not None and unit.train_parts is not None
            assert not set(unit.test_parts) & set(unit.train_parts)
            assert sorted(unit.test_parts + unit.train_parts) == list(range(n))
            tested += unit.test_parts
        assert sorted(tested) == list(range(n))  # each part is held out exactly once
    assert (Unit(2, "rafdb", 1).train_parts, Unit(2, "rafdb", 1).test_parts) == ((0,), (1,))
    assert Unit(1, "bp4d_plus", None).train_parts is None


def test_each_stage2_unit_starts_from_what_the_paper_says() -> None:
    assert stage2_unit("bp4d", 2, True).init == Unit(1, "bp4d", 2)
    disfa = stage2_unit("disfa", 3, True)
    assert disfa.init == Unit(2, "bp4d", 3, Unit(1, "bp4d", 3))
    assert stage2_unit("rafdb", 1, True).init == Unit(1, "bp4d_plus", None)
    assert stage2_unit("bp4d", 1, False).init is None  # ablation without stage 1 (PI)


def test_plan_runs_dependencies_first_and_each_unit_once() -> None:
    cfg = load_config("default", ["protocol.datasets=[disfa, rafdb, ferplus, bp4d]"])
    units = plan(cfg)
    assert len(units) == len(set(units))
    for i, u in enumerate(units):
        if u.init is not None:
            assert units.index(u.init) < i
    names = [u.name for u in units]
    assert names.count("s1-bp4d_plus-all") == 1  # shared by both FER datasets
    assert sum(n.startswith("s2-bp4d-") for n in names) == 3  # needed by DISFA, asked for too
    # Fold 1 of the default protocol: stage 1 on BP4D, BP4D+ and all of BP4D+ (for FER), and
    # stage 2 on BP4D, DISFA, BP4D+, RAF-DB, AffectNet-7, AffectNet-8, FERPlus.
    assert len(plan(load_config("default", ["protocol.folds=[1]"]))) == 3 + 7


def test_unit_keys_follow_what_the_result_depends_on() -> None:
    cfg = load_config("cpu-tiny")
    unit = stage2_unit("disfa", 1, True)
    key = unit_key(cfg, unit, MANIFESTS)
    same = [
        "tracking.mlflow_uri=http://127.0.0.1:5000",
        "compute.ray_address=ray://10.0.0.1:10001",
        "protocol.datasets=[disfa]",
    ]
    assert unit_key(load_config("cpu-tiny", same), unit, MANIFESTS) == key
    # A stage-1 setting changes the stage-1 unit two levels down, so this key too.
    assert unit_key(load_config("cpu-tiny", ["stage1.lr=0.1"]), unit, MANIFESTS) != key
    # ...but a stage-2 setting leaves stage-1 results valid.
    s1 = Unit(1, "bp4d", 1)
    assert unit_key(load_config("cpu-tiny", ["stage2.lam=1"]), s1, MANIFESTS) == unit_key(
        cfg, s1, MANIFESTS
    )
    changed = dict(MANIFESTS, bp4d=MANIFESTS["bp4d"].model_copy(update={"input_hash": "other"}))
    assert unit_key(cfg, unit, changed) != key  # new BP4D shards: retrain BP4D and DISFA
    # Other images from the same inputs (a forced rerun at another JPEG quality): retrain;
    # the same shards moved elsewhere, or rebuilt with --force: reuse.
    requality = {"options": {"jpeg_quality": "60", "force": "True"}}
    changed = dict(MANIFESTS, bp4d=MANIFESTS["bp4d"].model_copy(update=requality))
    assert unit_key(cfg, unit, changed) != key
    moved = {"source_root": "/elsewhere", "options": {"jpeg_quality": "95", "force": "True"}}
    changed = dict(MANIFESTS, bp4d=MANIFESTS["bp4d"].model_copy(update=moved))
    assert unit_key(cfg, unit, changed) == key


def test_a_fold_that_does_not_exist_is_one_clear_error() -> None:
    with pytest.raises(ClefError, match="fold 9 does not exist"):
        folds_of("bp4d", [9])
    assert folds_of("bp4d", [4]) == []  # fold 4 is BP4D+'s: BP4D skips it


def test_a_part_without_rows_is_refused_before_training(shard_dir: Path) -> None:
    """A stage asked for a fold part its shards hold no rows of stops while planning (a
    worker scoring an empty test split crashed in numpy before)."""
    cfg = load_config("cpu-tiny", [f"data.data_dir={shard_dir.parent}"])
    expected = r"bp4d: no rows in fold part\(s\) 3 of .*found 0, 1, 2"
    with pytest.raises(ClefError, match=expected):
        plan_stage(cfg, StageJob(2, ("bp4d",), (0, 1), (3,)))
    with pytest.raises(ClefError, match=expected):
        plan_stage(cfg, StageJob(1, ("bp4d",), (1, 3)))
    assert plan_stage(cfg, StageJob(2, ("bp4d",), (0, 1), (2,))).rows > 0


def test_affectnet8_is_in_the_full_reproduction_and_the_kuberay_job() -> None:
    """Table 5 reports AffectNet-8: the default protocol (which the `full-reproduction`
    deployment runs) fine-tunes it from BP4D+'s stage 1 in its own 8-class label space, and
    the KubeRay job gives a root for every dataset of that protocol."""
    import shlex

    import yaml

    from clef_core.method.config import ProtocolConfig
    from preprocessing.readers import READERS

    datasets = ProtocolConfig().datasets
    assert "affectnet8" in datasets and "affectnet7" in datasets
    an8 = stage2_unit("affectnet8", 1, True)
    assert an8 in plan(load_config("paper")) and an8.init == Unit(1, "bp4d_plus", None)
    assert (an8.train_parts, an8.test_parts) == ((0,), (1,))
    assert READERS["affectnet8"].classes[-1] == "contempt"
    assert len(READERS["affectnet8"].classes) == 8 and len(READERS["affectnet7"].classes) == 7
    job = yaml.safe_load((REPO / "infra/kuberay/rayjob.yaml").read_text())
    words = shlex.split(job["spec"]["entrypoint"])
    roots = {words[i + 1].split("=")[0] for i, w in enumerate(words) if w == "--root"}
    assert roots == set(datasets)
