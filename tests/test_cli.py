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
    for command in ("version", "config"):
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
