"""Config loading: defaults are the paper's, presets are diffs, overrides, error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from clef_core.common.errors import ConfigError
from clef_core.method.config import (
    ExperimentConfig,
    known_presets,
    load_config,
    parse_override,
    read_config,
    save_config,
)


def test_defaults_are_the_papers_hyper_parameters() -> None:
    cfg = load_config()
    assert cfg.stage1.temperature == 0.25
    assert (cfg.stage1.batch_size, cfg.stage1.epochs, cfg.stage1.warmup_epochs) == (64, 5, 1.0)
    assert (cfg.stage1.min_lr, cfg.stage1.weight_decay) == (1e-6, 0.01)
    assert cfg.stage2.lam == 2.0
    assert cfg.stage2.lr_for("bp4d") == 2e-4 and cfg.stage2.lr_for("disfa") == 1e-4
    assert cfg.stage2.lr_for("ferplus") == 1e-4 and cfg.stage2.lr_for("rafdb") == 2e-4
    assert cfg.model.arch == "ViT-B-16-quickgelu" and cfg.model.image_size == 224


def test_presets_are_diffs_over_defaults() -> None:
    assert {"default", "paper", "cpu-tiny"} <= set(known_presets())
    tiny = load_config("cpu-tiny")
    assert tiny.model.arch == "inline" and tiny.model.inline is not None
    assert tiny.model.image_size == 96
    # Not named in the preset, so still the paper's value.
    assert tiny.stage1.temperature == 0.25 and tiny.stage2.lam == 2.0
    paper = load_config("paper")
    assert paper.model.inline is None and paper.compute.use_gpu


def test_overrides_win_and_are_typed() -> None:
    cfg = load_config("cpu-tiny", ["stage1.epochs=1", "stage2.head=linear", "seed=7"])
    assert cfg.stage1.epochs == 1 and cfg.stage2.head == "linear" and cfg.seed == 7
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}


ODD_PATH = "/data/my runs #2: fold 1"  # a comment mark, a YAML mapping mark and spaces


def test_paths_survive_typed_and_text_overrides() -> None:
    """The code's own overrides are typed values: a path stays the path. A user's `--set`
    text is read as YAML except where the setting holds text (paths, URIs), which YAML would
    cut at the '#' or turn into a mapping at the ': '."""
    typed = load_config("cpu-tiny", [{"data.data_dir": Path(ODD_PATH), "protocol.folds": [2]}])
    assert typed.data.data_dir == Path(ODD_PATH) and typed.protocol.folds == [2]
    text = load_config("cpu-tiny", [f"data.shards={ODD_PATH}", f"model.init_weights={ODD_PATH}"])
    assert text.data.shards == ODD_PATH and text.model.init_weights == Path(ODD_PATH)
    assert parse_override("model.init_weights=null") == {"model": {"init_weights": None}}
    assert parse_override("protocol.folds=[1, 2]") == {"protocol": {"folds": [1, 2]}}  # YAML
    # later overrides win, whatever their form
    cfg = load_config("cpu-tiny", [{"seed": 3}, "seed=4", {"stage1.epochs": 0}])
    assert (cfg.seed, cfg.stage1.epochs) == (4, 0)
    with pytest.raises(ConfigError, match="override key"):
        load_config("cpu-tiny", [{"stage1.": 1}])


def test_configs_are_frozen() -> None:
    cfg = load_config()
    with pytest.raises(Exception, match="frozen"):
        cfg.stage1.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "stage1.temperature=-1",
            r"stage1\.temperature: Input should be greater than 0 \(got -1\)",
        ),
        ("stage1.epoch=2", r"stage1\.epoch: unknown setting"),
        ("stage2.head=mlp", r"stage2\.head: Input should be 'names' or 'linear'"),
        ("protocol.datasets=[bp4d, nosuch]", r"unknown dataset 'nosuch'; known: bp4d"),
        ("model.inline.vision_layers=4;model.inline.patch_size=7", r"multiple of patch_size 7"),
        (
            "model.input_norm=sepia",
            r"model\.input_norm: Input should be 'clip' or 'per_image_gray'",
        ),
        ("stage1.epochs", r"expected an override like stage1\.epochs=1"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_config("cpu-tiny", override.split(";"))
    assert "\n" not in str(info.value)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'nosuch'; known presets: cpu-tiny"):
        load_config("nosuch")


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config("cpu-tiny", ["stage1.epochs=3"])
    path = save_config(cfg, tmp_path / "config.yaml")
    assert read_config(path) == cfg
    flat = cfg.flat()
    assert flat["stage1.epochs"] == "3" and flat["model.inline.image_size"] == "96"
    assert isinstance(read_config(path), ExperimentConfig)


def test_ablations_switch_losses_through_weights() -> None:
    from clef_core.method.config import ABLATIONS, ablation_overrides

    base = load_config("cpu-tiny", ablation_overrides("baseline"))
    assert base.stage1.epochs == 0 and base.stage2.head == "linear" and base.stage2.weight_dn == 0
    no_pa = load_config("cpu-tiny", ablation_overrides("PI+N+D"))
    assert no_pa.stage1.weight_image_activity == 0 and no_pa.stage1.weight_image_image == 1
    assert load_config("cpu-tiny", ablation_overrides("PA+PI+N+D")) == load_config("cpu-tiny")
    assert list(ABLATIONS)[-3:] == ["PA+PI+N+D", "SSL", "SSL+N+D"]  # ours after the paper's
    # Ours: stage 1 with instance pairing, no activity text (its validator would refuse one).
    for name, head in (("SSL", "linear"), ("SSL+N+D", "names")):
        ssl = load_config("cpu-tiny", ablation_overrides(name))
        assert ssl.stage1.pairing == "instance" and ssl.stage1.epochs > 0, name
        assert ssl.stage1.weight_image_activity == 0 and ssl.stage2.head == head, name
    with pytest.raises(ConfigError, match="unknown ablation 'X'"):
        ablation_overrides("X")
