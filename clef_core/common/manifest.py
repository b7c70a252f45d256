"""The shard manifest (`<shards>/<dataset>/manifest.json`): what preprocessing wrote, typed.

Written last by `clef preprocess` (`preprocessing.pipeline.finish`) and read by everything that
opens the shards (training, the cache, a preprocessing rerun), all through this module. A
manifest this code cannot read (cut short, edited, or written in an earlier format) is one
clear error saying to run `clef preprocess` again: the shards are a cache of their source, and
a rerun keeps every finished shard and writes a new manifest in seconds.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clef_core.common.errors import ClefError
from clef_core.common.storage import Location, Where, location

_Dir = TypeVar("_Dir", Path, Location)

# 2: typed (this module): `shards` maps each file to its bytes and rows, rows without a task
# are `rows_without_task` (format 1 kept them under the task "None"), parts are ints.
FORMAT = 2


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Shard(_Frozen):
    """One shard file as written: what a rerun and `cache.verify_shards` check it against."""

    bytes: int = Field(ge=0)
    rows: int = Field(ge=0)


class Manifest(_Frozen):
    format: int = FORMAT
    dataset: str
    au_ids: list[int]  # the shards' `au` columns, in order (AU datasets)
    classes: list[str]  # the shards' `expression` indices (FER datasets)
    rows: int = Field(ge=0)
    rows_per_subject: dict[str, int]
    rows_per_task: dict[str, int]  # activity id (T1, ...) -> rows; tasked datasets only
    rows_without_task: int = Field(0, ge=0)  # rows whose `task` is null
    rows_per_part: dict[int, int]  # fold part (0-based; -1 none) -> rows
    no_face: int = Field(ge=0)  # rows kept with face_found = false
    decode_reduction: dict[int, int]  # 1, 2, 4, 8 -> shards decoded at that reduction
    unreadable: int = Field(ge=0)  # frames whose file could not be read
    unreadable_examples: list[str]
    failed_sequences: list[str]  # sequences with no shard: the message of each
    issues: list[str]  # problems found while listing or reading (never fatal)
    shards: dict[str, Shard]  # file name -> its size and rows, by name
    source_root: str
    input_hash: str  # fingerprint of the inputs (`pipeline.input_hash`)
    code_version: str
    image_size: int
    options: dict[str, str]

    @property
    def tasks(self) -> list[str]:
        """The activities with rows, in their order (T1, T2, ..., T10)."""
        return sorted(self.rows_per_task, key=_task_order)

    @property
    def shard_names(self) -> list[str]:
        return list(self.shards)

    def content_digest(self) -> str:
        """A hash of what the shards hold, for the caches built from them (decoded arrays,
        trained units, probes): every field but where the inputs lay (`source_root`) and the
        run's `force` switch. The options (JPEG quality, decode reduction, detector) and each
        shard's bytes are in it: a `clef preprocess --force` with other options gives other
        images under the same inputs, and must not reuse what was built from the old ones."""
        import hashlib

        data = self.model_dump(mode="json", exclude={"source_root"})
        data["options"] = {k: v for k, v in data["options"].items() if k != "force"}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _task_order(task: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", task)
    return (int(digits) if digits else 0, task)


def manifest_path(shard_dir: _Dir, dataset: str) -> _Dir:
    """Where a dataset's manifest lies (a local path, or a Location in object storage)."""
    return shard_dir / dataset / "manifest.json"


def write_manifest(shard_dir: Path, manifest: Manifest) -> Path:
    """Write atomically (a temporary file renamed into place): a reader never sees half."""
    path = manifest_path(shard_dir, manifest.dataset)
    tmp = path.with_name(f".{path.name}.tmp")
    data = json.loads(manifest.model_dump_json())
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _rerun(dataset: str, shard_dir: Where, root: object) -> str:
    return f"clef preprocess --dataset {dataset} --root {root} --out {shard_dir}"


def read_manifest(shard_dir: Where, dataset: str) -> Manifest:
    """A dataset's manifest (on this disk or in object storage), or one clear error: none yet,
    or one this code cannot read."""
    path = manifest_path(location(shard_dir), dataset)
    if not path.is_file():
        raise ClefError(
            f"no shards for {dataset} in {shard_dir}: run `clef preprocess --dataset {dataset}` first"
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raw, problem = {}, f"it does not read as JSON ({err})"
    else:
        problem = ""
    root = raw.get("source_root", "<the dataset's root>") if isinstance(raw, dict) else "?"
    if not problem and isinstance(raw, dict) and raw.get("format") != FORMAT:
        found = raw.get("format", 1)  # format 1 had no `format` field
        problem = f"it is in format {found}, this clef reads format {FORMAT}"
    if not problem:
        try:
            return Manifest.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the top level"
            problem = f"{where}: {first['msg']}"
    raise ClefError(
        f"{path} is not a manifest this clef reads ({problem}); preprocess again (finished "
        f"shards are kept): {_rerun(dataset, shard_dir, root)}"
    )


def recorded_shards(shard_dir: Where, dataset: str) -> dict[str, Shard]:
    """Each shard's size and rows as the last manifest recorded them; {} when there is none
    or it cannot be read (a rerun then checks each shard's schema alone and rewrites it)."""
    try:
        return dict(read_manifest(shard_dir, dataset).shards)
    except ClefError:
        return {}
