"""A decoded cache of the shards, for data that fits in memory (`compute.cache_decoded`).

Small images (the 64-px cpu-tiny model) are cheap to keep decoded: each dataset's shards are
decoded once, shrunk to the workers' source side (`source_size`), and kept as uint8
arrays in `<data_dir>/cache/`, keyed by the shards' manifest. Training then feeds Ray Train
from memory (`data.in_memory`): no per-epoch read, decode or Ray Data task start-up, which
cost most of a short CPU training run (docs/measurements.md, "Training from scratch"). Large real datasets
at 224 px stream from the shards instead (`data.model_inputs`); both deliver the same rows
and columns (uint8 `image`, `au`, `expression`, `activity`). No Ray here: the in-process
trainer (`clef_core.training.local`) uses it too.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clef_core.common.errors import ClefError
from clef_core.common.manifest import read_manifest
from clef_core.common.storage import Location, Where, location
from clef_core.method.config import AugmentConfig

COLUMNS = ["dataset", "subject", "task", "frame", "image", "au", "expression", "part", "face_found"]
# Bumped when the cached columns change, so an older cache is rebuilt, not misread.
CACHE_FORMAT = 4  # 3: no sample_key (stage 1 samples by row key); 4: subject (the probes)


def row_key(subject: str | None, task: str | None, frame: int) -> int:
    """A row's identity (subject, task, frame) as one non-negative int64, so it can ride along
    the tensor batches (strings cannot) and evaluation can say which frame each score is for
    (`clef_core.training.heldout` maps it back and checks it is unique)."""
    import hashlib

    # A missing task may arrive as None or as NaN (numpy/pandas): both are "no task".
    subject, task = (v if isinstance(v, str) else "" for v in (subject, task))
    text = f"{subject}\0{task}\0{int(frame)}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def row_keys(subjects: Sequence, tasks: Sequence, frames: Sequence) -> np.ndarray:
    """`row_key` of each row of a batch's id columns: the int64 `row` column of every batch
    (what `train.predict` collects)."""
    return np.array(
        [row_key(s, t, f) for s, t, f in zip(subjects, tasks, frames, strict=True)], np.int64
    ).reshape(-1)


def shard_files(shard_dir: Where, dataset: str) -> list[Location]:
    folder = location(shard_dir) / dataset
    return [folder / n for n in read_manifest(shard_dir, dataset).shards]


def read_table(file: Location, columns: list[str]) -> pa.Table:
    """Columns of one shard, on whatever filesystem it is."""
    return pq.read_table(file.path, columns=columns, filesystem=file.fs)


def verify_shards(shard_dir: Where, dataset: str) -> None:
    """Every shard the manifest lists opens (its Parquet footer: seconds, no data read), has
    the size and rows the manifest recorded for it, and together they hold the manifest's
    rows; otherwise one error naming the bad shards and the command that rebuilds them
    (`clef preprocess` treats such a shard as not done)."""
    shard_dir = location(shard_dir)
    manifest = read_manifest(shard_dir, dataset)
    unreadable, changed, rows = [], [], 0
    for name, want in manifest.shards.items():
        path = shard_dir / dataset / name
        try:
            with path.open() as f:
                n = pq.ParquetFile(f).metadata.num_rows
            size = path.size()
        except (OSError, pa.ArrowInvalid) as err:  # missing, truncated, not Parquet
            unreadable.append(f"{name} ({str(err).splitlines()[0]})")
            continue
        rows += n
        if (want.bytes, want.rows) != (size, n):
            changed.append(
                f"{name} ({size} bytes, {n} rows; recorded {want.bytes} bytes, {want.rows} rows)"
            )
    if not unreadable and not changed and rows == manifest.rows:
        return
    found = "; ".join(
        f"{len(names)} {what}: {', '.join(names[:5])}" + (" ..." if len(names) > 5 else "")
        for what, names in (("unreadable", unreadable), ("not as recorded", changed))
        if names
    )
    found = found or f"{rows} rows"
    raise ClefError(
        f"the {dataset} shards in {shard_dir / dataset} do not match their manifest "
        f"({manifest.rows} rows in {len(manifest.shards)} shards expected; {found}); "
        f"rebuild them: clef preprocess --dataset {dataset} --root {manifest.source_root} "
        f"--out {shard_dir}"
    )


def decode_jpegs(images: Sequence[bytes]) -> np.ndarray:
    """JPEG bytes -> uint8 RGB [B, H, W, 3]."""
    out = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for b in images]
    return np.stack(out)


def source_size(model_size: int, *augments: AugmentConfig) -> int:
    """Side at which images reach the workers: large enough that the smallest random crop of
    any of `augments` is still sampled at about one pixel per model pixel (`augment`)."""
    smallest = min((a.crop_scale[0] for a in augments), default=1.0)
    return math.ceil(model_size / math.sqrt(smallest))


def shrink(rgb: np.ndarray, side: int) -> np.ndarray:
    """uint8 [B, H, W, 3] -> uint8 [B, side, side, 3], antialiased (INTER_AREA); larger
    targets leave the images as they are (upsampling happens once, on the worker)."""
    if rgb.shape[1] <= side and rgb.shape[2] <= side:
        return rgb
    return np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) for im in rgb])


def _cache_path(shard_dir: Where, dataset: str, side: int) -> Location:
    """Next to the shards (`<shards>/../cache/`), wherever they are."""
    import hashlib

    key = f"{CACHE_FORMAT}:{read_manifest(shard_dir, dataset).content_digest()}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return location(shard_dir).parent / "cache" / f"{dataset}-{side}px-{digest}.npz"


def decoded_arrays(shard_dir: Where, dataset: str, side: int) -> dict[str, np.ndarray]:
    """Every row of `dataset`'s shards decoded to uint8 [N, side, side, 3] with its columns,
    built on first use (threads: OpenCV releases the GIL) and then read from the cache."""
    path = _cache_path(shard_dir, dataset, side)
    if path.is_file():
        with path.open() as f, np.load(f, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    table = pa.concat_tables([read_table(f, COLUMNS) for f in shard_files(shard_dir, dataset)])
    images = table["image"].to_pylist()
    chunks = [images[i : i + 256] for i in range(0, len(images), 256)]
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        decoded = list(pool.map(lambda c: shrink(decode_jpegs(c), side), chunks))
    au = table["au"].to_pylist()
    width = max((len(a) for a in au), default=0)
    arrays = {
        "image": np.concatenate(decoded) if decoded else np.zeros((0, side, side, 3), np.uint8),
        # len(au) rows, not -1: an expression dataset has width 0, where -1 is ambiguous
        "au": np.array([a if len(a) else [-1] * width for a in au], np.int8).reshape(
            len(au), width
        ),
        "expression": np.asarray(table["expression"].to_pylist(), np.int64),
        "part": np.asarray(table["part"].to_pylist(), np.int8),
        "dataset": np.asarray(table["dataset"].to_pylist(), str),
        "task": np.asarray([t or "" for t in table["task"].to_pylist()], str),
        # who is shown: the identity probe (clef_core.training.probe); never a training column
        "subject": np.asarray(table["subject"].to_pylist(), str),
        "row": row_keys(
            table["subject"].to_pylist(), table["task"].to_pylist(), table["frame"].to_pylist()
        ),
    }
    # Whole or not at all: a concurrent unit reads a whole file or builds its own.
    if path.local is not None:  # atomic rename
        path.local.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.local.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path.local)
    else:  # one upload, the object appears when it completes
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        path.write_bytes(buffer.getvalue())
    return arrays


def split_mask(
    arrays: dict[str, np.ndarray],
    parts: Sequence[int] | None = None,
    labels: str | None = None,
    limit: dict[str, int] | None = None,
    subjects: Sequence[str] | None = None,
) -> np.ndarray:
    """Which rows of the decoded arrays a split keeps (bool [N]): `data.keep_rows`' filters."""
    mask = np.ones(len(arrays["part"]), bool)
    if parts is not None:
        mask &= np.isin(arrays["part"], np.asarray(parts, np.int8))
    if labels == "au":
        mask &= (arrays["au"] >= 0).any(1)
    elif labels == "expression":
        mask &= arrays["expression"] >= 0
    if limit is not None:
        bound = np.array([limit.get(t, -1) if t else -1 for t in arrays["task"]], np.int64)
        mask &= arrays["row"] <= bound
    if subjects is not None:
        mask &= np.isin(arrays["subject"], np.asarray(subjects, str))
    return mask


def cached_split(
    arrays: dict[str, np.ndarray],
    parts: Sequence[int] | None = None,
    labels: str | None = None,
    activity_index: dict[str, int] | None = None,
    limit: dict[str, int] | None = None,
    shuffle_seed: int | None = None,
    subjects: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The rows `load_split` + `decode_batch` would give, from the decoded arrays: same
    filters, same stage-1 sample (`limit`), same subjects (`subjects`: stage 2's label
    fraction); rows in a seeded random order when asked (sequences are stored in frame order),
    columns as `decode_batch` names them."""
    rows = np.flatnonzero(split_mask(arrays, parts, labels, limit, subjects))
    if shuffle_seed is not None:
        rows = np.random.default_rng(shuffle_seed).permutation(rows)
    out = {
        "image": arrays["image"][rows],
        "expression": arrays["expression"][rows],
        "row": arrays["row"][rows],
    }
    if arrays["au"].shape[1]:
        out["au"] = arrays["au"][rows]
    if activity_index is not None:
        keys = np.char.add(np.char.add(arrays["dataset"][rows], "/"), arrays["task"][rows])
        out["activity"] = np.array([activity_index[k] for k in keys], np.int64)
    return out
