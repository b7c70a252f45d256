"""The unit cache: each protocol unit's folder, keyed by everything its result depends on, and
the rules for reusing it.

A unit's folder `<data_dir>/runs/<unit>-<key>/` holds `checkpoint/`, for stage 2 the held-out
`predictions.parquet` its metrics are recomputed from (`clef_core.training.heldout`), and
`result.json`, the latter written last and atomically: a unit whose result exists is not
trained again, so a rerun after a failure redoes only what failed and a rerun with nothing
changed finishes at once. With storage at a URI the folder is a local copy of the stored one
(`stored_unit_dir`), its result uploaded last there too.

Faults (docs/faults.md): a cached unit whose result or checkpoint does not
open whole is reported in one line and trained again; two runs on one data dir train a unit
once (`unit_lock`: the second waits and reuses the result).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from clef_core.common.results import UnitResult
from clef_core.common.storage import Location, Where
from clef_core.method.config import ExperimentConfig
from clef_core.training.heldout import FILE as PREDICTIONS
from clef_core.training.protocol import Unit, read_manifests, unit_key

log = logging.getLogger("clef.experiment")  # the name the warnings have always had


def unit_dir(cfg: ExperimentConfig, unit: Unit, key: str) -> Path:
    """The unit's folder on this machine: in the storage folder (by default the data dir), or,
    when storage is a URI, its local copy under the data dir (`stored_unit_dir` is the store)."""
    home = cfg.data.data_dir if cfg.data.storage is None else cfg.data.storage_dir.local
    return (home or cfg.data.data_dir) / "runs" / f"{unit.name}-{key}"


def stored_unit_dir(cfg: ExperimentConfig, unit: Unit, key: str) -> Location | None:
    """Where the unit is kept when storage is a URI (object storage); None when the local
    folder is the store."""
    store = cfg.data.storage_dir
    return None if store.local is not None else store / "runs" / f"{unit.name}-{key}"


def ray_storage(cfg: ExperimentConfig) -> Where:
    """Ray Train's storage (each run's reported checkpoints): every worker writes there."""
    return (
        cfg.data.data_dir / "ray_results"
        if cfg.data.storage is None
        else cfg.data.storage_dir / "ray_results"
    )


def key_of(cfg: ExperimentConfig, unit: Unit) -> str:
    chain, u = set(), unit
    while u is not None:
        chain.add(u.dataset)
        u = u.init  # type: ignore[assignment]
    return unit_key(cfg, unit, read_manifests(cfg.data.shard_dir, chain))


def cached_result(cfg: ExperimentConfig, unit: Unit) -> UnitResult | None:
    """The unit's cached result when it and its checkpoint open whole, else None (a damaged
    one is reported in one line)."""
    key = key_of(cfg, unit)
    folder = unit_dir(cfg, unit, key)
    return find_result(folder, stored_unit_dir(cfg, unit, key), unit.name)


def find_result(folder: Path, stored: Location | None, name: str) -> UnitResult | None:
    """The unit's finished result, from its folder or else from object storage, when it and
    its checkpoint open whole (a damaged one is reported in one line and set aside)."""
    return _reusable(folder, name) or _fetched(stored, folder, name)


def keep_checkpoint(folder: Path, trained: Path, stored: Location | None) -> Path:
    """The stage's final checkpoint copied into the unit's folder (`checkpoint/`); with
    storage at a URI, `trained` was a download of the remote one: removed once copied."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    shutil.copytree(trained, folder / "checkpoint")
    if stored is not None:
        shutil.rmtree(trained, ignore_errors=True)
    return folder / "checkpoint"


def save_result(folder: Path, result: UnitResult, stored: Location | None) -> None:
    """`result.json`, atomically (the mark of a finished unit), then the unit to object
    storage when storage is a URI."""
    _write_atomic(folder / "result.json", json.dumps(asdict(result), indent=1))
    _store(folder, stored)


def _fetched(stored: Location | None, folder: Path, name: str) -> UnitResult | None:
    """The unit's result from object storage, copied into `folder` (its result last, so a
    copy cut short is never taken for a finished unit), when the store has one."""
    if stored is None or not (stored / "result.json").is_file():
        return None
    log.info("%s: reusing its result from %s", name, stored)
    shutil.rmtree(folder, ignore_errors=True)
    stored.get(folder, skip=("result.json",))
    _write_atomic(folder / "result.json", (stored / "result.json").read_text())
    return _reusable(folder, name)


def _store(folder: Path, stored: Location | None) -> None:
    """The finished unit to object storage: its files, then its result (the mark of a
    finished unit there too)."""
    if stored is not None:
        stored.delete()  # an older, damaged copy
        stored.put(folder, skip=("result.json", "result.damaged.json"))
        (stored / "result.json").write_bytes((folder / "result.json").read_bytes())


def _reusable(folder: Path, name: str) -> UnitResult | None:
    """The result in `folder` if there is one and its files load whole; a damaged one is said
    (which file, why) and moved aside, so the unit is trained again."""
    from clef_core.method.checkpoint import checkpoint_problem

    done = folder / "result.json"
    if not done.is_file():
        return None
    try:
        result = UnitResult.read(done)
        # Always `checkpoint/` beside it: a result written on another machine names its path.
        result.checkpoint = str(folder / "checkpoint")
        problem = checkpoint_problem(Path(result.checkpoint))
    except (OSError, ValueError, TypeError) as err:  # cut short, not JSON, other fields
        problem = f"{done}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if problem is None and result.stage == 2:
        problem = _table_problem(folder / PREDICTIONS)
    if problem is None:
        return result
    log.warning("%s: the cached unit is damaged (%s); training it again", name, problem)
    done.replace(folder / "result.damaged.json")  # kept for a look; never read again
    return None


def _table_problem(path: Path) -> str | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as err:
        return f"{path}: {str(err).splitlines()[0]}"
    return None


@contextlib.contextmanager
def unit_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold the unit's lock (`<unit dir>.lock`, an flock: released by the kernel when its
    process dies, so a crashed run leaves no stale lock). A second run on the same data dir
    waits here, saying for whom, then finds the unit done and reuses it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.with_name(f"{folder.name}.lock")
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another run"
            log.warning("%s: being trained by %s; waiting for it to reuse its result", name, holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {os.uname().nodename}")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def init_checkpoint(cfg: ExperimentConfig, unit: Unit, init: UnitResult | None) -> str | None:
    """The init unit's checkpoint as the workers read it: its URI when storage is one (every
    node reaches it), else its local folder."""
    if init is None or unit.init is None:
        return init.checkpoint if init else None
    stored = stored_unit_dir(cfg, unit.init, init.key)
    return init.checkpoint if stored is None else (stored / "checkpoint").full_uri
