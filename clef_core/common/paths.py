"""Input paths that are not there, told apart: a symbolic link that leads back to itself (a
loop: `ln -s a b; ln -s b a`) answers False to `Path.exists()` and `is_file()` just as a
missing file does, so without this a loop was reported as "no such file" (issue #31), or left
out of a folder's listing without a word."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def symlink_loop(path: Path) -> bool:
    """Whether `path` is a symbolic link that never resolves (the system's ELOOP)."""
    try:
        path.stat()
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def missing(path: Path, what: str = "no such file or folder") -> str:
    """Why `path` cannot be read, for a message: `what`, or that it is a symlink loop."""
    return f"symlink loop at {path}" if symlink_loop(path) else f"{path}: {what}"


def symlink_loops(root: Path) -> list[Path]:
    """Every symlink loop under `root`, sorted. Links to folders are not followed (a link to
    a parent folder is a cycle the listings never enter), and a folder that cannot be listed
    is passed over, as `os.walk` does. Only links are stat-ed: whether an entry is a link or a
    folder comes with the listing (`os.scandir`), so on a dataset of a million frames the
    walk costs what listing the tree costs, not a system call a file."""
    found, folders = [], [root]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        if symlink_loop(Path(entry.path)):
                            found.append(Path(entry.path))
                    elif entry.is_dir(follow_symlinks=False):
                        folders.append(Path(entry.path))
        except OSError:  # unreadable, or gone while listed
            continue
    return sorted(found)


def loop_problems(root: Path) -> list[str]:
    """One line for each symlink loop under `root`, as a listing reports what it skipped."""
    return [f"symlink loop at {p}; not read" for p in symlink_loops(root)]
