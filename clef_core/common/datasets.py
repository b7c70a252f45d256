"""The dataset registry: one record per dataset, holding every fact the code needs about it.

The label space, fold parts, activities and their texts, what stage 1 reads, what stage 2
starts from, the paper's learning rate and figures, the reader and the synthetic layout's
folder are here and nowhere else: the config's dataset names and learning rates, the
protocol's folds, the activity texts, the fold parts, the readers' label lists, the paper's
figures and the synthetic roots are all read from `REGISTRY`. Adding a dataset is adding a
record below and its reader file (`preprocessing/readers/`; a `clef synth` layout file as
well to render it). Imports nothing heavy: preprocessing, the method and training read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from clef_core.common.errors import ClefError

Task = Literal["au", "fer"]


@dataclass(frozen=True)
class StartFrom:
    """What a dataset's stage-2 training starts from (the paper's protocol, section 4.1)."""

    stage: int  # 1: a stage-1 (pre-trained) model; 2: another dataset's stage-2 model
    dataset: str | None = None  # whose model; None = this dataset's own
    same_fold: bool = True  # the unit of the same fold number; False: trained on every part


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str  # as the CLI, the shards, the config and MLflow name it
    task: Task | None  # "au": multi-label AU detection; "fer": expressions; None: unlabelled
    reader: str  # "module:Class" of its reader (`preprocessing.readers` imports it by name)
    au_ids: tuple[int, ...] = ()  # AU datasets: the AUs coded, in the shards' `au` order
    classes: tuple[str, ...] = ()  # FER datasets: expression keys, in the shards' order
    # Subject-exclusive fold parts (fold k tests on part k-1, trains on the rest). Empty: one
    # train/test split, which the reader writes as part 0 (train) and part 1 (test).
    parts: tuple[tuple[str, ...], ...] = ()
    activities: Mapping[str, str] = field(default_factory=dict)  # task id -> its text
    paper_activities: frozenset[str] = frozenset()  # tasks whose text is the paper's own
    # Stage 1's rows: "coded" = the AU-coded frames only, unbalanced; "sampled" = every frame,
    # at most `stage1.frames_per_activity` per activity (clef_core.training.selection).
    stage1_rows: Literal["coded", "sampled", "all"] = "all"
    start: StartFrom = StartFrom(1)  # what its stage 2 starts from
    paper_lr: float | None = None  # stage 2's learning rate in the paper
    paper_table: int | None = None  # the paper's table of its results
    paper_mean: float | None = None  # its stated mean F1 (AU) or accuracy (FER), in %
    paper_au_f1: Mapping[int, float] = field(default_factory=dict)  # CLEF's per-AU F1 (%)
    paper_note: str | None = None  # said under its results table in the report
    synth: str | None = None  # the `clef synth` layout that renders it (shared by AffectNet-7/8)
    synth_folder: str | None = None  # that layout's folder (the reader's root) under synth's --out
    synth_writer: str | None = None  # module of that layout's writer (synthetic.layouts)

    @property
    def folds(self) -> int:
        """Number of folds: one per part, or the one train/test split."""
        return len(self.parts) or 1


# BP4D and DISFA parts used by JAA-Net and ME-GraphAU.
_BP4D_PARTS = (
    ("F001", "M007", "F018", "F008", "F002", "M004", "F010", "F009", "M012", "M001", "F016",
     "M014", "F023", "M008"),
    ("M011", "F003", "M010", "M002", "F005", "F022", "M018", "M017", "F013", "M016", "F020",
     "F011", "M013", "M005"),
    ("F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017",
     "M015", "F014"),
)  # fmt: skip
_DISFA_PARTS = (
    ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
    ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
    ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
)

BP4D_PLUS_SUBJECTS = tuple(
    [f"F{i:03d}" for i in range(1, 83)] + [f"M{i:03d}" for i in range(1, 59)]
)
BP4D_PLUS_SPLIT_SEED = 2023


def _bp4d_plus_parts() -> tuple[tuple[str, ...], ...]:
    """Our fixed 4 x 35 split of the 140 BP4D+ subjects.

    NOT the CLEF authors' split (none is public): a permutation seeded with 2023, each part
    sorted. Results on it are comparable between runs of this project, not to the paper.
    """
    order = np.random.default_rng(BP4D_PLUS_SPLIT_SEED).permutation(len(BP4D_PLUS_SUBJECTS))
    subjects = [BP4D_PLUS_SUBJECTS[i] for i in order]
    return tuple(tuple(sorted(subjects[k * 35 : (k + 1) * 35])) for k in range(4))


# Activity texts. BP4D T1-T3: Table 1 of the paper, word for word (its "A1"-"A3";
# tests/method/test_text.py checks them against the paper's text).
# BEST EFFORT (ours): BP4D T4-T8 and every BP4D+ task. The paper gives the others only in its
# supplementary material, which is not available: these follow Table 1's style, from the tasks
# and target emotions the BP4D and BP4D+ papers describe (BP4D+ T2-T10 wording unverified).
_BP4D_ACTIVITIES = {
    "T1": "Talk to the experimenter and listen to a joke (Interview). The target emotion is happiness or amusement",
    "T2": "Watch and listen to a recorded documentary and discuss their reactions. The target emotion is sadness",
    "T3": "Experience sudden, unexpected burst of sound. The target emotion is surprise or startle",
    "T4": "Improvise a silly song. The target emotion is embarrassment",
    "T5": "Anticipate and experience a physical threat in a dart game. The target emotion is fear or nervousness",
    "T6": "Submerge a hand in ice water. The target emotion is physical pain",
    "T7": "React to a harsh insult from the experimenter. The target emotion is anger or upset",
    "T8": "Experience an unpleasant smell. The target emotion is disgust",
}
_BP4D_PLUS_ACTIVITIES = {
    "T1": "Talk to the experimenter and listen to a joke (Interview). The target emotion is happiness or amusement",
    "T2": "Watch a 3D avatar of oneself. The target emotion is surprise",
    "T3": "Listen to a recorded 911 emergency phone call. The target emotion is sadness",
    "T4": "Experience sudden, unexpected burst of sound. The target emotion is surprise or startle",
    "T5": "Answer true or false questions. The target emotion is skepticism",
    "T6": "Improvise a silly song. The target emotion is embarrassment",
    "T7": "Anticipate and experience a physical threat in a dart game. The target emotion is fear or nervousness",
    "T8": "Submerge a hand in ice water. The target emotion is physical pain",
    "T9": "React to a harsh insult from the experimenter. The target emotion is anger or upset",
    "T10": "Experience an unpleasant smell. The target emotion is disgust",
}
_BP4D_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
_AFFECTNET7 = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")
_FER_START = StartFrom(1, "bp4d_plus", same_fold=False)  # stage 1 on all of BP4D+

# In the order the default protocol runs them (`ProtocolConfig.datasets`).
_RECORDS = (
    Dataset(
        "bp4d", "au", "preprocessing.readers.bp4d:BP4DReader",
        au_ids=_BP4D_AUS, parts=_BP4D_PARTS,
        activities=_BP4D_ACTIVITIES, paper_activities=frozenset({"T1", "T2", "T3"}),
        stage1_rows="coded",  # "all labeled frames ... for both two stages" (section 4.1.1)
        paper_lr=2e-4, paper_table=2, paper_mean=65.9,
        paper_au_f1={1: 55.8, 2: 46.8, 4: 63.3, 6: 79.5, 7: 77.6, 10: 83.6, 12: 87.8,
                     14: 67.3, 15: 55.2, 17: 63.5, 23: 53.0, 24: 57.8},
        synth="bp4d", synth_folder="BP4D", synth_writer="synthetic.layouts.bp4d",
    ),
    Dataset(
        "disfa", "au", "preprocessing.readers.disfa:DISFAReader",
        au_ids=(1, 2, 4, 6, 9, 12, 25, 26), parts=_DISFA_PARTS,
        # the BP4D stage-2 model of the same fold number: the two share no subjects, so any
        # BP4D fold is leak-free; the same number keeps runs paired
        start=StartFrom(2, "bp4d"),
        paper_lr=1e-4, paper_table=3, paper_mean=64.8,
        paper_au_f1={1: 64.3, 2: 61.8, 4: 68.4, 6: 49.0, 9: 55.2, 12: 72.9, 25: 89.9, 26: 57.0},
        synth="disfa", synth_folder="DISFA", synth_writer="synthetic.layouts.disfa",
    ),
    Dataset(
        "bp4d_plus", "au", "preprocessing.readers.bp4d:BP4DPlusReader",
        au_ids=_BP4D_AUS, parts=_bp4d_plus_parts(), activities=_BP4D_PLUS_ACTIVITIES,
        stage1_rows="sampled",  # "equally sample 480,000 frames ... by 10 activity categories"
        paper_lr=2e-4, paper_table=4, paper_mean=63.1,
        paper_au_f1={1: 47.5, 2: 39.6, 4: 40.2, 6: 86.5, 7: 87.3, 10: 90.5, 12: 89.9,
                     14: 81.6, 15: 47.0, 17: 46.6, 23: 54.3, 24: 41.5},
        paper_note="Table 4 states a mean of 63.1; its per-AU cells average 62.7.",
        synth="bp4d_plus", synth_folder="BP4D+", synth_writer="synthetic.layouts.bp4d",
    ),
    Dataset(
        "rafdb", "fer", "preprocessing.readers.fer:RAFDBReader",
        classes=("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),
        start=_FER_START, paper_lr=2e-4, paper_table=5, paper_mean=90.09,
        synth="rafdb", synth_folder="RAF-DB", synth_writer="synthetic.layouts.fer",
    ),
    # AffectNet-7 and AffectNet-8 are two protocols (7 classes, and 8 with contempt) read
    # from the one AffectNet release.
    Dataset(
        "affectnet7", "fer", "preprocessing.readers.fer:AffectNet7Reader",
        classes=_AFFECTNET7, start=_FER_START, paper_lr=2e-4, paper_table=5, paper_mean=65.66,
        synth="affectnet", synth_folder="AffectNet", synth_writer="synthetic.layouts.fer",
    ),
    Dataset(
        "affectnet8", "fer", "preprocessing.readers.fer:AffectNet8Reader",
        classes=(*_AFFECTNET7, "contempt"),
        start=_FER_START, paper_lr=2e-4, paper_table=5, paper_mean=62.77,
        synth="affectnet", synth_folder="AffectNet", synth_writer="synthetic.layouts.fer",
    ),
    Dataset(
        "ferplus", "fer", "preprocessing.readers.fer:FERPlusReader",
        classes=("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"),
        start=_FER_START, paper_lr=1e-4, paper_table=5, paper_mean=89.74,
        synth="ferplus", synth_folder="FERPlus", synth_writer="synthetic.layouts.fer",
    ),
    # Any folder of the user's own videos and images: no labels, not trained on.
    Dataset(
        "video", None, "preprocessing.readers.video:VideoFolderReader",
        synth="videos", synth_folder="videos", synth_writer="synthetic.layouts.videos",
    ),
)  # fmt: skip

REGISTRY: dict[str, Dataset] = {}


def register(new: Dataset) -> Dataset:
    """Add a record (the ones above at import; a test may add one before importing the
    modules that read the registry). One clear error for a record that contradicts another."""
    if new.name in REGISTRY:
        raise ClefError(f"dataset {new.name!r} is registered twice")
    if (new.task == "au") != bool(new.au_ids) or (new.task == "fer") != bool(new.classes):
        raise ClefError(f"dataset {new.name!r}: an AU dataset has au_ids, a FER one classes")
    where = (new.synth_folder, new.synth_writer)
    for other in REGISTRY.values():
        same_layout = new.synth is not None and other.synth == new.synth
        if same_layout and (other.synth_folder, other.synth_writer) != where:
            raise ClefError(f"synth layout {new.synth!r} has two folders or writers")
    REGISTRY[new.name] = new
    return new


for _new in _RECORDS:
    register(_new)


def record(name: str) -> Dataset:
    """The record of `name`, or one clear error listing the known names."""
    if name not in REGISTRY:
        raise ClefError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def labelled() -> tuple[str, ...]:
    """The datasets there is something to train on (AU or FER labels), in registry order."""
    return tuple(d.name for d in REGISTRY.values() if d.task is not None)


def of_task(task: Task) -> tuple[str, ...]:
    return tuple(d.name for d in REGISTRY.values() if d.task == task)


def with_activities() -> tuple[str, ...]:
    """The datasets stage 1 can pre-train on: those with activity labels."""
    return tuple(d.name for d in REGISTRY.values() if d.activities)


def synth_layouts() -> dict[str, Dataset]:
    """Each `clef synth` layout name -> the first record it renders (its folder and writer)."""
    out: dict[str, Dataset] = {}
    for d in REGISTRY.values():
        if d.synth is not None:
            out.setdefault(d.synth, d)
    return out
