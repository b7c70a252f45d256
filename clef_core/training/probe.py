"""Linear probes of a frozen image tower: what stage 1 learned (issue 28).

The paper claims that activity-supervised pre-training gives expression features and
suppresses identity (section 3.1, Figure 5). The synthetic data knows every frame's AUs,
activity and person, so three linear probes on frozen image features can test that claim on
people a probe never saw:

- AUs: one logistic regression per AU, fitted on the fold's training parts, scored on its
  held-out part (other people): mean F1 at 0.5 and mean ROC-AUC, beside the F1 of predicting
  every AU present.
- Activity (the task, T1...): a multinomial logistic regression, same split; accuracy beside
  the largest held-out activity's share (the best constant answer).
- Identity: the training parts' people only; each person's tasks split in two (the first half
  of their tasks in task order fit the probe, the rest test it), so the probe must recognise
  a person in activities, and so expressions, it never saw them in. Lower accuracy = identity
  suppressed. Beside it: the largest person's share of the test frames.

Ours, where the paper gives no probe: the features are the unit-length image embedding that
stage 2 reads (`ClefModel.encode_image`), standardised; probes are scikit-learn's
LogisticRegression (L2, C = `C`), the AU probes with balanced class weights, as stage 2
weighs rare AUs up (Eq. 5), so that F1 at 0.5 is meaningful for rare AUs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from clef_core.common.errors import ClefError
from clef_core.common.manifest import read_manifest
from clef_core.method.augment import resize
from clef_core.method.checkpoint import load_model
from clef_core.method.config import ExperimentConfig
from clef_core.method.metrics import always_present_f1, au_auc, au_f1
from clef_core.method.model import ClefModel, build_model
from clef_core.training.cache import decoded_arrays, source_size
from clef_core.training.protocol import Unit

C = 1.0  # ours: inverse L2 strength of every probe (scikit-learn's default)
MAX_ITER = 2000
# Ours: frames probed per (person, task), evenly spaced. Neighbouring frames of a video are
# near-duplicates, so a sample loses little, and it bounds the frozen tower's forward passes
# on real data (a BP4D task has ~1,000 frames; ViT-B/16 on a CPU scores ~10 a second).
FRAMES_PER_SEQUENCE = 12


@dataclass(frozen=True)
class ProbeResult:
    """Fractions (0-1). `frames`: how many frames fitted and tested each probe."""

    model: str  # the checkpoint probed, or "random"
    dataset: str
    fold: int
    au_f1: float  # mean F1 over AUs at 0.5, held-out people
    au_f1_always: float  # the always-present predictor's mean F1 on the same frames
    au_f1_activity: float  # the same AU probes on one-hot activity features alone
    au_auc: float  # mean per-AU ROC-AUC
    activity_acc: float  # held-out people
    activity_majority: float  # largest held-out activity's share
    identity_acc: float  # unseen activities of seen people
    identity_majority: float  # largest person's share of those frames
    frames: dict[str, int] = field(default_factory=dict)
    per_au_f1: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The figures as MLflow metrics (NaN left out)."""
        keys = ("au_f1", "au_f1_always", "au_f1_activity", "au_auc", "activity_acc",
                "activity_majority", "identity_acc", "identity_majority")  # fmt: skip
        out = {k: float(getattr(self, k)) for k in keys}
        return {k: v for k, v in out.items() if not math.isnan(v)}


@torch.no_grad()
def image_features(
    model: ClefModel, images: np.ndarray, device: torch.device, batch: int = 256
) -> np.ndarray:
    """uint8 [N, H, W, 3] -> the frozen tower's unit image features [N, d] (eval mode, no
    augmentation: the evaluation resize)."""
    model.eval().to(device)
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch]).to(device)
        out.append(model.encode_image(resize(x, model.image_size)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.embed_dim), np.float32)


def _fit(x: np.ndarray, y: np.ndarray, balanced: bool = False) -> tuple[StandardScaler, Any]:
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=C, max_iter=MAX_ITER, class_weight="balanced" if balanced else None)
    return scaler, clf.fit(scaler.transform(x), y)


def probe_aus(
    x_fit: np.ndarray, au_fit: np.ndarray, x_test: np.ndarray, au_test: np.ndarray,
    au_ids: tuple[int, ...],
) -> dict[str, Any]:  # fmt: skip
    """One probe per AU on the frames where it is coded; held-out probabilities [N, C] scored
    like stage 2's (`clef_core.method.metrics`)."""
    scores = np.zeros(au_test.shape, np.float64)
    for c in range(au_fit.shape[1]):
        known = au_fit[:, c] >= 0
        y = au_fit[known, c]
        if len(np.unique(y)) < 2:  # one class in training: the probe can only say that
            scores[:, c] = float(y[0]) if len(y) else 0.0
            continue
        scaler, clf = _fit(x_fit[known], y, balanced=True)
        scores[:, c] = clf.predict_proba(scaler.transform(x_test))[:, 1]
    f1 = au_f1(scores > 0.5, au_test, au_ids)
    return {
        "au_f1": f1.mean,
        "au_f1_always": always_present_f1(au_test, au_ids).mean,
        "au_auc": au_auc(scores, au_test, au_ids).mean,
        "per_au_f1": {f"AU{a}": v for a, v in f1.per_au.items() if not math.isnan(v)},
    }


def probe_classes(
    x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> tuple[float, float]:
    """A multinomial probe's accuracy on the test frames, and the largest test class's share."""
    if len(y_test) == 0 or len(np.unique(y_fit)) < 2:
        return float("nan"), float("nan")
    scaler, clf = _fit(x_fit, y_fit)
    accuracy = float(np.mean(clf.predict(scaler.transform(x_test)) == y_test))
    _, counts = np.unique(y_test, return_counts=True)
    return accuracy, float(counts.max() / len(y_test))


def activity_onehot(tasks: np.ndarray, known: np.ndarray) -> np.ndarray:
    """[N, len(known)]: each frame's activity one-hot over `known` (another activity, or
    none: all zero)."""
    return (tasks[:, None] == known[None, :]).astype(np.float32)


def sequence_sample(subjects: np.ndarray, tasks: np.ndarray, per: int | None) -> np.ndarray:
    """Row indices: at most `per` evenly spaced rows of each (person, task) in row order (the
    shards hold a sequence's frames in order); every row when `per` is None."""
    if per is None:
        return np.arange(len(subjects))
    keys = np.char.add(np.char.add(subjects.astype(str), "\0"), tasks.astype(str))
    keep = []
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        if len(rows) > per:
            rows = rows[np.linspace(0, len(rows) - 1, per).round().astype(int)]
        keep.append(rows)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def identity_split(subjects: np.ndarray, tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (fit, test) over the rows: each person's first half of tasks (task order,
    rounded up) fits, the rest tests; a person with one task only is left out of both."""
    fit = np.zeros(len(subjects), bool)
    test = np.zeros(len(subjects), bool)
    for person in np.unique(subjects):
        mine = subjects == person
        own = sorted(set(tasks[mine].tolist()))
        if len(own) < 2:
            continue
        first = set(own[: math.ceil(len(own) / 2)])
        in_first = np.isin(tasks, list(first))
        fit |= mine & in_first
        test |= mine & ~in_first
    return fit, test


def run_probes(
    model: ClefModel,
    arrays: dict[str, np.ndarray],
    au_ids: tuple[int, ...],
    train_parts: tuple[int, ...],
    test_parts: tuple[int, ...],
    device: torch.device = torch.device("cpu"),
    name: str = "",
    fold: int = 0,
    per_sequence: int | None = FRAMES_PER_SEQUENCE,
) -> ProbeResult:
    """The three probes on one dataset's decoded rows (`cache.decoded_arrays`, which holds
    `subject` and `task`) split by fold parts; `per_sequence` frames of each (person, task)."""
    if "subject" not in arrays:
        raise ClefError("the decoded rows have no subject column: rebuild the decoded cache")
    rows = sequence_sample(arrays["subject"], arrays["task"], per_sequence)
    arrays = {k: v[rows] for k, v in arrays.items()}
    train = np.isin(arrays["part"], train_parts)
    test = np.isin(arrays["part"], test_parts)
    if not train.any() or not test.any():
        raise ClefError(
            f"no rows in fold parts {train_parts} (train) or {test_parts} (test); "
            f"found parts {sorted(set(arrays['part'].tolist()))}"
        )
    feats = image_features(model, arrays["image"], device)
    coded = (arrays["au"] >= 0).any(1) if arrays["au"].shape[1] else np.zeros(len(train), bool)
    if not (coded & train).any():
        raise ClefError("the dataset has no AU labels in its training parts: nothing to probe")
    fit, held_out, au = coded & train, coded & test, arrays["au"]
    aus = probe_aus(feats[fit], au[fit], feats[held_out], au[held_out], au_ids)
    tasks = arrays["task"]
    has_task = tasks != ""
    # Ours: a reference for features that know the activity and nothing else (what activity
    # pairing asks of stage 1), the same AU probes on one-hot activity features.
    onehot = activity_onehot(tasks, np.unique(tasks[fit & has_task]))
    from_activity = probe_aus(onehot[fit], au[fit], onehot[held_out], au[held_out], au_ids)
    act_fit, act_test = train & has_task, test & has_task
    activity = probe_classes(feats[act_fit], tasks[act_fit], feats[act_test], tasks[act_test])
    id_fit, id_test = identity_split(np.where(train, arrays["subject"], ""), tasks)
    id_fit, id_test = id_fit & train, id_test & train
    subjects = arrays["subject"]
    identity = probe_classes(feats[id_fit], subjects[id_fit], feats[id_test], subjects[id_test])
    counts = {"au_fit": coded & train, "au_test": coded & test, "activity_fit": act_fit,
              "activity_test": act_test, "identity_fit": id_fit, "identity_test": id_test}  # fmt: skip
    return ProbeResult(
        model=name, dataset=str(arrays["dataset"][0]) if len(arrays["dataset"]) else "",
        fold=fold, au_f1=aus["au_f1"], au_f1_always=aus["au_f1_always"],
        au_f1_activity=from_activity["au_f1"], au_auc=aus["au_auc"],
        activity_acc=activity[0], activity_majority=activity[1],
        identity_acc=identity[0], identity_majority=identity[1],
        frames={k: int(v.sum()) for k, v in counts.items()}, per_au_f1=aus["per_au_f1"],
    )  # fmt: skip


RANDOM = "random"  # `--model random`: a fresh initialisation of the config's architecture


def model_to_probe(spec: str, cfg: ExperimentConfig) -> ClefModel:
    """The checkpoint folder `spec` (any stage; a linear head is ignored), or RANDOM: the
    config's architecture initialised with its seed, no initial weights (what stage 1 starts
    from when trained from scratch)."""
    if spec == RANDOM:
        torch.manual_seed(cfg.seed)
        return build_model(cfg.model.model_copy(update={"init_weights": None}))
    model, _ = load_model(Path(spec))
    return model


def probe(
    cfg: ExperimentConfig, spec: str, dataset: str, fold: int,
    device: torch.device = torch.device("cpu"), model: ClefModel | None = None,
) -> ProbeResult:  # fmt: skip
    """Probe `spec` (a checkpoint folder or RANDOM; or `model`, named `spec`, when given) on
    `dataset`'s fold: fitted on the fold's training parts, tested on its held-out part
    (`protocol.Unit`'s parts), read from the decoded cache the training reads (built on first
    use)."""
    manifest = read_manifest(cfg.data.shard_dir, dataset)
    if not manifest.au_ids or not manifest.tasks:
        raise ClefError(
            f"{dataset}: the probes need AU labels and activities (BP4D, BP4D+); found "
            f"{len(manifest.au_ids)} AUs and {len(manifest.tasks)} tasks"
        )
    model = model if model is not None else model_to_probe(spec, cfg)
    unit = Unit(2, dataset, fold)
    assert unit.train_parts is not None and unit.test_parts is not None
    side = source_size(model.image_size, cfg.stage1.augment, cfg.stage2.augment)
    arrays = decoded_arrays(cfg.data.shard_dir, dataset, side)
    return run_probes(
        model, arrays, tuple(manifest.au_ids), unit.train_parts, unit.test_parts, device,
        spec, fold,
    )  # fmt: skip
