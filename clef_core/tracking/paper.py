"""The paper's own figures (Zhang et al., ICCV 2023, ../shared/paper/CLEF-ICCV2023.txt), typed
in from its tables for the report to show beside ours, labelled as the paper's.

- Tables 2-4: CLEF's per-AU F1 (%) and stated average on BP4D, DISFA and BP4D+.
- Table 5: CLEF's FER accuracy (%) on AffectNet-7/8, RAF-DB and FERPlus.
- Table 6: every row (method, components, BP4D mean F1, RAF-DB accuracy).
- Zero-shot accuracy (%), from the CLEF poster (ICCV 2023): the paper reports none.

`tests/test_paper.py` checks each per-AU row against its stated average. Note: Table 4's
CLEF row averages to 62.7, not the 63.1 the paper states; both are kept as printed.
"""

from __future__ import annotations

from dataclasses import dataclass

from clef_core.common.datasets import REGISTRY
from clef_core.common.errors import ConfigError
from clef_core.common.results import ZS_AU_TO_FER, ZS_UNSEEN

# Tables 2-5 are typed into each dataset's record (clef_core.common.datasets); these are views.
# CLEF's row of Table 2 (BP4D), Table 3 (DISFA) and Table 4 (BP4D+): AU id -> F1 (%).
AU_F1: dict[str, dict[int, float]] = {
    d.name: dict(d.paper_au_f1) for d in REGISTRY.values() if d.paper_au_f1
}
# The "Avg" column of the same rows, as printed.
AU_MEAN: dict[str, float] = {
    d.name: d.paper_mean for d in REGISTRY.values() if d.task == "au" and d.paper_mean is not None
}
# CLEF's row of Table 5: accuracy (%).
FER_ACCURACY: dict[str, float] = {
    d.name: d.paper_mean for d in REGISTRY.values() if d.task == "fer" and d.paper_mean is not None
}
# Mean F1 / accuracy per dataset, as quoted by the protocol and the closing tables.
MEANS: dict[str, float] = {**AU_MEAN, **FER_ACCURACY}


# The datasets of Table 6's two columns (mean F1 on BP4D, accuracy on RAF-DB).
TABLE6_AU, TABLE6_FER = "bp4d", "rafdb"


@dataclass(frozen=True)
class Table6Row:
    # "CLIP", "FaRL" (their weights, no stage 1), "CLEF" (stage 1 from FaRL) or, ours, "SSL"
    method: str
    components: frozenset[str]  # of PA, PI, I, N, D (and, ours, SSL)
    bp4d: float | None  # mean F1 (%); None: a row of ours, no paper figure
    rafdb: float | None  # accuracy (%); None as bp4d

    @property
    def name(self) -> str:
        """The row's components in the paper's column order, e.g. "PA+PI+I+N+D"."""
        return "+".join(c for c in ("SSL", *COMPONENTS) if c in self.components)


COMPONENTS = ("PA", "PI", "I", "N", "D")


def _row(method: str, components: str, bp4d: float | None, rafdb: float | None) -> Table6Row:
    return Table6Row(method, frozenset(components.split("+")), bp4d, rafdb)


TABLE6: tuple[Table6Row, ...] = (
    _row("CLIP", "I", 63.4, 87.88),
    _row("CLIP", "I+N", 64.0, 88.72),
    _row("CLIP", "I+N+D", 64.4, 89.70),
    _row("FaRL", "I", 63.7, 88.31),
    _row("FaRL", "I+N", 64.1, 88.69),
    _row("FaRL", "I+N+D", 64.6, 88.78),
    _row("CLEF", "PI+I", 65.0, 89.67),
    _row("CLEF", "PA+PI+I", 64.2, 89.34),
    _row("CLEF", "PI+I+N", 64.7, 88.57),
    _row("CLEF", "PA+PI+I+N", 64.9, 89.57),
    _row("CLEF", "PI+I+N+D", 64.8, 89.44),
    _row("CLEF", "PA+PI+I+N+D", 65.9, 90.09),
)


# Ours, beside Table 6 and not in the paper (no figures): stage 1 with instance pairing, the
# self-supervised pairing of the paper's Figure 1a (`clef_core.method.config.ABLATIONS`: SSL,
# SSL+N+D), beside PI and PI+N+D at the same steps, data and initialisation.
OURS_ROWS: tuple[Table6Row, ...] = (
    _row("SSL", "SSL+I", None, None),
    _row("SSL", "SSL+I+N+D", None, None),
)


def method_of(ablation: str) -> str:
    """The method column of a row of ours: "CLIP"/"FaRL" (no stage 1, by its weights), "SSL"
    (stage 1 with instance pairing, ours) or "CLEF" (stage 1 with the paper's pairing)."""
    if "-" in ablation:
        return ablation.split("-")[0]
    return "SSL" if "SSL" in components_of(ablation) else "CLEF"


def components_of(ablation: str) -> frozenset[str]:
    """Our ablation name (`clef_core.method.config.ABLATIONS`, e.g. "PI+N+D", "CLIP-I+N", or the
    earlier "baseline") as the paper's components: the image encoder I is always there."""
    if ablation == "baseline":
        return frozenset({"I"})
    return frozenset({"I", *ablation.split("-")[-1].split("+")})


# The zero-shot experiments: the paper gives no figure, the CLEF poster (ICCV 2023) does.
# Accuracy (%) by (experiment, FER dataset tested, row): "CLEF" ran stage 1 first, "FaRL"
# fine-tuned FaRL's weights without it. Experiment names as `clef_core.training.zeroshot`
# records them (`clef_core.common.results`).
POSTER = "the CLEF poster (ICCV 2023)"
POSTER_ZEROSHOT: dict[tuple[str, str, str], float] = {
    (ZS_UNSEEN, "rafdb", "CLEF"): 29.14,
    (ZS_UNSEEN, "rafdb", "FaRL"): 16.21,
    (ZS_UNSEEN, "ferplus", "CLEF"): 34.40,
    (ZS_UNSEEN, "ferplus", "FaRL"): 25.73,
    (ZS_AU_TO_FER, "rafdb", "CLEF"): 29.47,
    (ZS_AU_TO_FER, "rafdb", "FaRL"): 13.10,
    (ZS_AU_TO_FER, "ferplus", "CLEF"): 24.90,
    (ZS_AU_TO_FER, "ferplus", "FaRL"): 21.20,
}


def row_index(name: str) -> int | None:
    """The index in (*TABLE6, *OURS_ROWS) of our row `name` (`clef_core.method.config.ABLATIONS`);
    None for a name no row has (an older report's)."""
    from clef_core.method.config import ablation_name

    try:
        canonical = ablation_name(name)
    except ConfigError:
        return None
    method, comps = method_of(canonical), components_of(canonical)
    for i, row in enumerate((*TABLE6, *OURS_ROWS)):
        if row.method == method and row.components == comps:
            return i
    return None
