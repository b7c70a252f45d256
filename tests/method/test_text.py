"""The text side of the method: the activity descriptions quote the paper's Table 1 word for
word, and every activity of BP4D and BP4D+ has a description."""

from __future__ import annotations

import random
import re
from pathlib import Path

from clef_core.method.text import ACTIVITIES, FROM_THE_PAPER, activity_prompts

PAPER = Path(__file__).resolve().parents[3] / "shared" / "paper" / "CLEF-ICCV2023.txt"
# Table 1 of the paper (ICCV 2023), rows A1-A3, as printed: the check does not depend on the
# paper's text file being beside the checkout (it is not in CI); where it is, the strings
# here are checked against it too.
TABLE_1 = {
    "1": "Talk to the experimenter and listen to a joke (Interview). The target emotion is "
    "happiness or amusement",
    "2": "Watch and listen to a recorded documentary and discuss their reactions. The target "
    "emotion is sadness",
    "3": "Experience sudden, unexpected burst of sound. The target emotion is surprise or startle",
}


def test_bp4d_t1_to_t3_are_table_1_word_for_word() -> None:
    for k, text in TABLE_1.items():
        assert ACTIVITIES["bp4d"][f"T{k}"] == text
    assert {t for d, t in FROM_THE_PAPER if d == "bp4d"} == {"T1", "T2", "T3"}
    if PAPER.is_file():  # the test's own copy is the paper's
        rows = dict(re.findall(r"^A([123])\t(.+?)\s*$", PAPER.read_text(), re.M))
        assert rows == TABLE_1


def test_every_activity_has_a_description_in_every_template() -> None:
    assert sorted(ACTIVITIES["bp4d"]) == sorted(f"T{i}" for i in range(1, 9))
    assert sorted(ACTIVITIES["bp4d_plus"]) == sorted(f"T{i}" for i in range(1, 11))
    texts = activity_prompts([("bp4d", "T1"), ("bp4d_plus", "T10")], random.Random(0))
    assert "listen to a joke (Interview)" in texts[0] and "disgust" in texts[1]
