"""Label text: AU and expression names and descriptions, activity descriptions, prompt templates.

Plain data, written by us in FACS-manual style (descriptions say what changes on the face).
Names fill "a photo of a person with {name}."; descriptions and activities draw one template
at random per mini-batch.
"""

from __future__ import annotations

import random

from clef_core.common.datasets import REGISTRY

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

# Activity descriptions: each dataset's record in the registry (BP4D T1-T3 the paper's Table 1
# word for word; the others ours, a best effort in its style).
ACTIVITIES: dict[str, dict[str, str]] = {
    d.name: dict(d.activities) for d in REGISTRY.values() if d.activities
}
# Which descriptions are the paper's; every other one is our best effort.
FROM_THE_PAPER = frozenset((d.name, t) for d in REGISTRY.values() for t in d.paper_activities)


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
