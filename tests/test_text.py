"""The text side of the method: the activity descriptions quote the paper's Table 1 word for
word, and every activity of BP4D and BP4D+ has a description."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from clef_core.text import ACTIVITIES, activity_prompts

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "CLEF-ICCV2023.txt"


def test_bp4d_t1_to_t3_are_table_1_word_for_word() -> None:
    if not PAPER.is_file():
        pytest.skip(f"the paper's text is not beside the checkout ({PAPER})")
    rows = dict(re.findall(r"^A([123])\t(.+?)\s*$", PAPER.read_text(), re.M))
    assert len(rows) == 3
    for k, text in rows.items():
        assert ACTIVITIES["bp4d"][f"T{k}"] == text


def test_every_activity_has_a_description_in_every_template() -> None:
    assert sorted(ACTIVITIES["bp4d"]) == sorted(f"T{i}" for i in range(1, 9))
    assert sorted(ACTIVITIES["bp4d_plus"]) == sorted(f"T{i}" for i in range(1, 11))
    texts = activity_prompts([("bp4d", "T1"), ("bp4d_plus", "T10")], random.Random(0))
    assert "listen to a joke (Interview)" in texts[0] and "disgust" in texts[1]
