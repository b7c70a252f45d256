"""The `clef` console script as a user runs it: help, version, config show, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLEF = [str(Path(sys.executable).with_name("clef"))]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run([*CLEF, *args], capture_output=True, text=True, env=env, timeout=120)


def test_help_lists_subcommands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("version", "config", "synth", "preprocess", "pretrain", "finetune",
                    "evaluate", "reproduce", "report", "predict", "stack", "submit", "demo"):  # fmt: skip
        assert command in out.stdout


def test_version() -> None:
    out = run("version")
    assert out.returncode == 0 and out.stdout.startswith("clef ")
    assert "torch 2.13.0" in out.stdout


def test_config_show_presets() -> None:
    paper = run("config", "show", "paper")
    assert paper.returncode == 0 and "arch: ViT-B-16-quickgelu" in paper.stdout
    tiny = run("config", "show", "cpu-tiny", "--set", "stage1.epochs=1")
    assert tiny.returncode == 0 and "arch: inline" in tiny.stdout and "epochs: 1" in tiny.stdout


def test_unknown_preset_is_one_line_and_nonzero() -> None:
    out = run("config", "show", "nosuch")
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "known presets: cpu-tiny, default, paper" in lines[0]
    assert "Traceback" not in out.stderr


def _one_line_error(out: subprocess.CompletedProcess[str], expected: str) -> None:
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_training_commands_reject_bad_input_in_one_line(tmp_path: Path) -> None:
    _one_line_error(
        run("finetune", "--dataset", "nosuch", "--data-dir", str(tmp_path)), "unknown dataset"
    )
    _one_line_error(
        run("pretrain", "--dataset", "rafdb", "--data-dir", str(tmp_path)),
        "stage 1 pre-trains on bp4d or bp4d_plus",
    )
    _one_line_error(
        run("finetune", "--dataset", "bp4d", "--fold", "1", "--preset", "cpu-tiny",
            "--data-dir", str(tmp_path)),
        "run `clef preprocess --dataset bp4d` first",
    )  # fmt: skip
    _one_line_error(run("report", "--data-dir", str(tmp_path)), "no report in")
    _one_line_error(
        run("predict", str(tmp_path), "--model", str(tmp_path / "none")),
        "no such checkpoint folder",
    )
    (tmp_path / "taken").write_text("")
    _one_line_error(
        run("predict", str(tmp_path), "--model", str(tmp_path / "none"), "--out",
            str(tmp_path / "taken")),
        "is a file: expected a folder",
    )  # fmt: skip


def test_a_set_that_conflicts_with_its_option_is_refused_in_one_line(tmp_path: Path) -> None:
    _one_line_error(
        run("finetune", "--dataset", "bp4d", "--data-dir", str(tmp_path / "b"),
            "--set", f"data.data_dir={tmp_path / 'a'}"),
        "--set data.data_dir and its own option (--data-dir",
    )  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_config_show_keeps_a_path_with_a_hash_and_a_colon() -> None:
    out = run("config", "show", "cpu-tiny", "--set", "data.shards=runs/x #y: z")
    assert out.returncode == 0 and "shards: 'runs/x #y: z'" in out.stdout, out.stdout


def test_resolving_a_config_creates_and_sets_nothing(tmp_path: Path) -> None:
    from clef_core.run.reproduction import resolve_config

    odd = tmp_path / "my runs #2: fold 1"
    before = dict(os.environ)
    cfg = resolve_config("cpu-tiny", [], odd, "127.0.0.1:1", "x://y")
    assert cfg.data.data_dir == odd and not odd.exists()
    assert (cfg.compute.ray_address, cfg.tracking.mlflow_uri) == ("127.0.0.1:1", "x://y")
    assert dict(os.environ) == before


def test_a_bug_exits_3_with_its_traceback() -> None:
    """Any exception other than a user error is a bug: its traceback is printed, exit code 3
    (1 and 2 stay for bad inputs and bad arguments)."""
    code = (
        "import sys, clef_core.method.config as c\n"
        "def broken(*args, **kwargs): raise TypeError('an injected programming error')\n"
        "c.load_config = broken\n"
        "sys.argv = ['clef', 'config', 'show', 'cpu-tiny']\n"
        "from flows.cli import main; main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "Traceback" in out.stderr and "TypeError: an injected programming error" in out.stderr


def test_tables_are_not_cut_when_the_output_is_not_a_terminal(tmp_path: Path) -> None:
    """Piped output (no COLUMNS): rich would lay tables out in 80 columns and cut cells."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"NO_COLOR": "1"}
    out = subprocess.run(
        [*CLEF, "synth", "--preset", "test", "--datasets", "videos", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "…" not in out.stdout and "frames/s" in out.stdout, out.stdout


def test_verbose_is_accepted_after_the_command() -> None:
    from flows.console import verbose_argument_first

    assert verbose_argument_first(["finetune", "--dataset", "bp4d", "--verbose"]) == [
        "--verbose", "finetune", "--dataset", "bp4d"]  # fmt: skip
    assert verbose_argument_first(["submit", "--", "finetune", "--verbose"]) == [
        "submit", "--", "finetune", "--verbose"]  # fmt: skip
