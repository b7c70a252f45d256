"""Label text: AU and expression names and descriptions, activity descriptions, prompt templates.

Plain data, written by us in FACS-manual style (descriptions say what changes on the face).
Names fill "a photo of a person with {name}."; descriptions and activities draw one template
at random per mini-batch.
"""

from __future__ import annotations

import random

NAME_TEMPLATE = "a photo of a person with {}."
DESCRIPTION_TEMPLATES = (
    "{}.",
    "a face in which {}.",
    "a photo of a face where {}.",
    "in this face, {}.",
)
# Ours: the paper draws one activity template per mini-batch but gives them only in its
# supplementary material; these read naturally around Table 1's sentences.
ACTIVITY_TEMPLATES = (
    "a photo of a person during this activity: {}.",
    "a face recorded during the task: {}.",
    "a person in this situation: {}.",
)

AU_NAMES: dict[int, str] = {
    1: "inner brow raiser",
    2: "outer brow raiser",
    4: "brow lowerer",
    5: "upper lid raiser",
    6: "cheek raiser",
    7: "lid tightener",
    9: "nose wrinkler",
    10: "upper lip raiser",
    12: "lip corner puller",
    14: "dimpler",
    15: "lip corner depressor",
    17: "chin raiser",
    20: "lip stretcher",
    23: "lip tightener",
    24: "lip pressor",
    25: "lips part",
    26: "jaw drop",
}

AU_DESCRIPTIONS: dict[int, tuple[str, ...]] = {
    1: (
        "the inner corners of the eyebrows are pulled up, wrinkling the middle of the forehead",
        "the inner ends of the brows rise, giving the brows an oblique shape",
    ),
    2: (
        "the outer parts of the eyebrows are pulled up, wrinkling the sides of the forehead",
        "the lateral brows arch upwards and the eye cover fold is stretched",
    ),
    4: (
        "the eyebrows are lowered and drawn together, with vertical furrows between them",
        "the brows pull down and inwards, narrowing the space above the eyes",
    ),
    5: (
        "the upper eyelids are raised, showing more of the white above the iris",
        "the eyes are widened by lifting the upper lids",
    ),
    6: (
        "the cheeks are raised, pushing up the lower eyelids and forming crow's feet",
        "the skin below the eyes bags up and wrinkles fan out from the outer eye corners",
    ),
    7: (
        "the eyelids are tightened, narrowing the eye opening and raising the lower lid",
        "the lower lids straighten and push up, squinting the eyes",
    ),
    9: (
        "the nose is wrinkled, with lines across the bridge and the nostrils pulled up",
        "the skin along the sides of the nose bunches up, raising the nostril wings",
    ),
    10: (
        "the upper lip is raised, deepening the furrow from the nose to the mouth corners",
        "the centre of the upper lip lifts, exposing more of the upper lip",
    ),
    12: (
        "the lip corners are pulled up and back into a smile",
        "the corners of the mouth rise obliquely and the nasolabial folds deepen",
    ),
    14: (
        "the lip corners are tightened inwards, forming dimples beside the mouth",
        "small pits appear at the corners of the mouth as the corners tighten",
    ),
    15: (
        "the lip corners are pulled down, turning the mouth downwards",
        "the corners of the lips angle down and the lower lip is stretched",
    ),
    17: (
        "the chin boss is pushed up, raising the lower lip and wrinkling the chin",
        "the chin skin wrinkles and bulges as the lower lip is pushed upwards",
    ),
    20: (
        "the lips are stretched sideways, elongating and flattening the mouth",
        "the mouth corners pull out horizontally and the lips thin",
    ),
    23: (
        "the lips are tightened, making the red parts of the lips narrower",
        "the lips narrow and roll slightly inwards with a tightened margin",
    ),
    24: (
        "the lips are pressed together firmly, with a bulge below the lower lip",
        "the closed lips press against each other and thin",
    ),
    25: (
        "the lips part, showing a gap between them or the teeth",
        "the mouth opens slightly as the lips separate",
    ),
    26: (
        "the jaw drops, opening the mouth and lowering the chin",
        "the lower jaw falls so the mouth hangs open",
    ),
}

EXPRESSION_NAMES: dict[str, str] = {
    "neutral": "a neutral expression",
    "happiness": "a happy expression",
    "sadness": "a sad expression",
    "surprise": "a surprised expression",
    "fear": "a fearful expression",
    "disgust": "a disgusted expression",
    "anger": "an angry expression",
    "contempt": "a contemptuous expression",
}

EXPRESSION_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "neutral": (
        "the face is relaxed with no muscle movement",
        "brows, eyes and mouth rest in their normal position",
    ),
    "happiness": (
        "the cheeks rise and the lip corners pull up into a smile",
        "crow's feet form at the eyes while the mouth smiles",
    ),
    "sadness": (
        "the inner brows rise, the brows draw together and the lip corners turn down",
        "the mouth corners drop and the chin wrinkles as the inner brows lift",
    ),
    "surprise": (
        "the brows rise high, the eyes widen and the jaw drops open",
        "the whole brow lifts, the upper lids rise and the mouth falls open",
    ),
    "fear": (
        "the brows rise and draw together, the eyes widen and the lips stretch",
        "raised, pinched brows with wide eyes and a horizontally stretched mouth",
    ),
    "disgust": (
        "the nose wrinkles and the upper lip rises",
        "the nostrils pull up, the upper lip lifts and the lip corners turn down",
    ),
    "anger": (
        "the brows lower and draw together, the eyes glare and the lips press tight",
        "a frowning brow, tightened lids and narrowed, pressed lips",
    ),
    "contempt": (
        "one lip corner tightens and rises on one side of the face",
        "a one-sided smirk with a dimple at one mouth corner",
    ),
}

# Activity descriptions. BP4D T1-T3: Table 1 of the paper, word for word (its "A1"-"A3";
# tests/test_text.py holds the paper's strings and checks them against the paper's text).
PAPER_TABLE_1: dict[str, str] = {
    "T1": "Talk to the experimenter and listen to a joke (Interview). The target emotion is happiness or amusement",
    "T2": "Watch and listen to a recorded documentary and discuss their reactions. The target emotion is sadness",
    "T3": "Experience sudden, unexpected burst of sound. The target emotion is surprise or startle",
}
# BEST EFFORT (ours): BP4D T4-T8 and every BP4D+ task. The paper gives the others only in its
# supplementary material, which is not available: these follow Table 1's style, from the tasks
# and target emotions the BP4D and BP4D+ papers describe (BP4D+ T2-T10 wording unverified).
ACTIVITIES: dict[str, dict[str, str]] = {
    "bp4d": {
        **PAPER_TABLE_1,
        "T4": "Improvise a silly song. The target emotion is embarrassment",
        "T5": "Anticipate and experience a physical threat in a dart game. The target emotion is fear or nervousness",
        "T6": "Submerge a hand in ice water. The target emotion is physical pain",
        "T7": "React to a harsh insult from the experimenter. The target emotion is anger or upset",
        "T8": "Experience an unpleasant smell. The target emotion is disgust",
    },
    "bp4d_plus": {
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
    },
}
# Which descriptions are the paper's; every other one is our best effort (above).
FROM_THE_PAPER = frozenset(("bp4d", t) for t in PAPER_TABLE_1)


def label_name(label: int | str) -> str:
    """The name of an AU id or expression key (free text is returned as is, for zero-shot)."""
    if isinstance(label, int):
        return AU_NAMES[label]
    return EXPRESSION_NAMES.get(label, label)


def name_prompts(labels: list[int] | list[str] | tuple) -> list[str]:
    return [NAME_TEMPLATE.format(label_name(label)) for label in labels]


def description_prompts(labels: list[int] | list[str] | tuple, rng: random.Random) -> list[str]:
    """One description per class, all in one template drawn for this mini-batch.

    Ours: the paper's descriptions are in its supplementary material (not here); we wrote two
    per class and draw one of them at random per class and mini-batch."""
    template = rng.choice(DESCRIPTION_TEMPLATES)
    out = []
    for label in labels:
        options = (
            AU_DESCRIPTIONS[label] if isinstance(label, int) else EXPRESSION_DESCRIPTIONS[label]
        )
        out.append(template.format(rng.choice(options)))
    return out


def activity_prompts(activities: list[tuple[str, str]], rng: random.Random) -> list[str]:
    """Texts for (dataset, task) pairs, in one template drawn for this mini-batch."""
    template = rng.choice(ACTIVITY_TEMPLATES)
    return [template.format(ACTIVITIES[dataset][task]) for dataset, task in activities]
