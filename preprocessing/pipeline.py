"""`clef preprocess`: a dataset's sequences -> aligned-face Parquet shards, in parallel with Ray.

Each Ray task reads one sequence, detects and aligns faces, and writes one shard atomically;
a sequence that fails is reported and the others go on. Finished shards are skipped on a
rerun (unless `force`), so an interrupted run resumes and ends with the same bytes. The
manifest is written last.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clef_core import __version__
from clef_core.common.errors import ClefError
from clef_core.common.manifest import Manifest, Shard, recorded_shards, write_manifest
from clef_core.common.paths import loop_problems
from faces.align import box_transform, face_transform, warp
from faces.decode import DecodeError
from faces.detect import Detection, DetectorConfig, FaceDetector, FaceTracker
from faces.native import collected
from preprocessing.readers import FrameItem, Reader, SequenceRef, get_reader
from preprocessing.shards import SCHEMA, ShardWriter, shard_path


@dataclass(frozen=True)
class PreprocessOptions:
    dataset: str
    root: Path
    shard_dir: Path
    image_size: int = 224
    jpeg_quality: int = 95
    force: bool = False
    reduce_decode: bool = True  # JPEG frames decoded smaller when the face allows (BP4D/BP4D+)
    detector: DetectorConfig = field(default_factory=DetectorConfig)


# What a bad input raises while its sequence is read (a file that cannot be decoded, opened
# or unzipped, a label file that is not CSV). Any other exception is a bug: it propagates
# with its traceback and stops the run instead of being counted as a failed sequence.
BAD_INPUT = (DecodeError, OSError, zipfile.BadZipFile, csv.Error, UnicodeDecodeError)

# A sequence's frames are decoded smaller only while its face crop's source stays this much
# larger than the crop: a face that later moves back by a fifth is still not upsampled.
REDUCE_HEADROOM = 1.25
REDUCE_KEY = b"clef.decode_reduction"  # in each shard's footer: a skipped shard still tells


@dataclass
class SequenceResult:
    key: str
    subject: str
    task: str | None
    part: int
    frames: int = 0
    faces: int = 0
    unreadable: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)
    skipped: bool = False  # shard already there
    rebuilt: bool = False  # a shard was there but did not open or match the manifest
    bytes: int = 0  # the shard's size, recorded in the manifest (`cache.verify_shards`)
    failed: str | None = None  # the whole sequence could not be processed
    reduce: int = 1  # frames decoded at 1/reduce scale
    seconds: float = 0.0
    # what the native decoders printed ("file: line", `faces.native`): a Ray worker has no
    # log file, so the driver logs them (`run_sequences`)
    decoder_output: list[str] = field(default_factory=list)


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)


def needs_face(item: FrameItem) -> np.ndarray | None:
    """The frame to search for a face, or None when the dataset already gives it (or the
    image is unreadable)."""
    return None if item.image is None or item.aligned or item.box is not None else item.image


def align_item(
    item: FrameItem, found: Detection | None, size: int
) -> tuple[np.ndarray, bool, float]:
    """The aligned face crop (BGR, size x size), whether a face was found, and its score
    (1.0 where the dataset gives the face)."""
    assert item.image is not None
    if item.aligned:  # already aligned by the dataset (RAF-DB aligned, FERPlus)
        return cv2.resize(item.image, (size, size), interpolation=cv2.INTER_CUBIC), True, 1.0
    if item.box is not None:  # the dataset's own face box (AffectNet)
        return warp(item.image, box_transform(item.box, size, margin=0.1), size), True, 1.0
    if found is None:  # kept, flagged: the row stays so no frame is silently dropped
        return centre_crop(item.image, size), False, 0.0
    return warp(item.image, face_transform(found.points, size), size), True, found.score


def landmarks(found: Detection | None, reduce: int) -> list[float] | None:
    """The shard's landmark column: x0..x4 then y0..y4 in the source frame's pixels (frames
    decoded at 1/reduce size are scaled back), None where no face was searched or found."""
    if found is None:
        return None
    points = found.points.astype(np.float64) * reduce
    return [float(v) for v in np.concatenate([points[:, 0], points[:, 1]])]


def decode_reduction(
    reader: Reader, seq: SequenceRef, detector: FaceDetector, size: int, probes: int = 5
) -> int:
    """1, 2, 4 or 8: how much smaller a sequence's frame files can be decoded, judged on the
    first of its first `probes` frames that shows a face. A real BP4D face (~550 px wide in
    1040 x 1392) needs a ~700 px source for a 224 crop: decoding at 1/2 is faster and each
    pixel a 2 x 2 mean. 1 when the reader cannot reduce or no face shows."""
    if not reader.reducible(seq):
        return 1
    for item in islice(reader.frames(seq), probes):
        found = None if item.image is None else detector.detect(item.image)
        if found is not None:
            side = size / math.hypot(*face_transform(found.points, size)[:, 0])  # crop's source
            reduce = 1
            while reduce < 8 and side / (2 * reduce) >= REDUCE_HEADROOM * size:
                reduce *= 2
            return reduce
    return 1


def finished_shard(path: Path, recorded: Shard | None = None) -> pq.ParquetFile | None:
    """The shard at `path` when it is complete, of today's schema and, when the manifest
    recorded it, of its recorded size and rows (one footer read), else None: a shard written
    before a schema change (say, before landmarks), cut short or replaced is built again,
    since it is only a cache of its source."""
    if not path.exists():
        return None
    try:
        shard = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid):
        return None
    if recorded and (recorded.bytes, recorded.rows) != (
        path.stat().st_size,
        shard.metadata.num_rows,
    ):
        return None
    return shard if shard.schema_arrow.equals(SCHEMA) else None


def process_sequence(opts: PreprocessOptions, seq: SequenceRef) -> SequenceResult:
    """Read, align and write one sequence's shard (or count an existing one)."""
    start = time.perf_counter()
    reader = get_reader(opts.dataset, opts.root)
    result = SequenceResult(seq.key, seq.subject, seq.task, reader.part(seq.subject))
    path = shard_path(opts.shard_dir, opts.dataset, seq.key)
    recorded = recorded_shards(opts.shard_dir, opts.dataset).get(path.name)
    shard = None if opts.force else finished_shard(path, recorded)
    if shard is not None:
        found = shard.read(columns=["face_found"]).column("face_found")
        result.frames, result.faces = shard.metadata.num_rows, int(sum(found.to_pylist()))
        result.reduce = int((shard.metadata.metadata or {}).get(REDUCE_KEY, b"1"))
        result.skipped, result.bytes = True, path.stat().st_size
        return result
    result.rebuilt = path.exists() and not opts.force
    tracker = FaceTracker(opts.detector, continuous=seq.continuous)
    writer = ShardWriter(path)
    with collected() as result.decoder_output:
        _write_shard(opts, seq, reader, tracker, writer, result)
    result.frames = writer.rows
    result.issues = reader.issues.messages
    if writer.rows and result.failed is None:
        writer.commit({REDUCE_KEY.decode(): str(result.reduce)})
        result.bytes = path.stat().st_size
    else:
        writer.abort()
    result.seconds = time.perf_counter() - start
    return result


def _write_shard(
    opts: PreprocessOptions,
    seq: SequenceRef,
    reader: Reader,
    tracker: FaceTracker,
    writer: ShardWriter,
    result: SequenceResult,
) -> None:
    """Add the sequence's rows to `writer`; a bad input ends it as `result.failed`."""
    try:
        if opts.reduce_decode:
            result.reduce = decode_reduction(reader, seq, tracker.detector, opts.image_size)
        items = ((item, needs_face(item)) for item in reader.frames(seq, result.reduce))
        for item, detection in tracker.track(items):
            if item.image is None:
                result.unreadable.append(item.error or f"{seq.key} frame {item.frame} unreadable")
                continue
            crop, found, score = align_item(item, detection, opts.image_size)
            _, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, opts.jpeg_quality])
            writer.add(
                {
                    "dataset": opts.dataset,
                    "subject": seq.subject,
                    "task": seq.task,
                    "frame": item.frame,
                    "image": jpeg.tobytes(),
                    "face_found": found,
                    "face_score": score,
                    "landmarks": landmarks(detection, result.reduce),
                    "au": item.au if item.au is not None else [],
                    "expression": item.expression,
                    "part": result.part,
                }
            )
            result.faces += found
    except BAD_INPUT as err:  # one bad input never stops the dataset; anything else is a bug
        result.failed = f"{seq.key}: {type(err).__name__}: {err}"


def input_hash(root: Path) -> str:
    """A fingerprint of the inputs: every file's relative path and size (no content read, so
    it stays cheap on hundreds of GB; a changed label file changes its size in practice)."""
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            p = Path(folder) / name
            try:
                size = p.stat().st_size
            except OSError:  # a broken link or a symlink loop (reported by `plan`): no size
                size = -1
            digest.update(f"{p.relative_to(root)}\0{size}\n".encode())
    return digest.hexdigest()[:16]


def manifest_of(
    opts: PreprocessOptions, results: list[SequenceResult], reader_issues: list[str]
) -> Manifest:
    reader = get_reader(opts.dataset, opts.root)
    done = [r for r in results if r.failed is None]
    subjects: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    parts: Counter[int] = Counter()
    without_task = 0
    for r in done:
        subjects[r.subject] += r.frames
        if r.task is not None:
            tasks[r.task] += r.frames
        else:
            without_task += r.frames
        parts[r.part] += r.frames
    issues = sorted({m for r in results for m in r.issues} | set(reader_issues))
    return Manifest(
        dataset=opts.dataset,
        au_ids=list(reader.au_ids),
        classes=list(reader.classes),
        rows=sum(r.frames for r in done),
        rows_per_subject=dict(sorted(subjects.items())),
        rows_per_task=dict(sorted(tasks.items())),
        rows_without_task=without_task,
        rows_per_part=dict(sorted(parts.items())),
        no_face=sum(r.frames - r.faces for r in done),
        decode_reduction=dict(sorted(Counter(r.reduce for r in done).items())),
        unreadable=sum(len(r.unreadable) for r in results),
        unreadable_examples=[m for r in results for m in r.unreadable][:50],
        failed_sequences=[r.failed for r in results if r.failed],
        issues=issues[:200],
        # what `cache.verify_shards` and a rerun check each shard against (footer + stat)
        shards={
            f"{r.key}.parquet": Shard(bytes=r.bytes, rows=r.frames)
            for r in sorted(done, key=lambda r: f"{r.key}.parquet")  # by file name
            if r.frames
        },
        source_root=str(opts.root.resolve()),
        input_hash=input_hash(opts.root),
        code_version=__version__,
        image_size=opts.image_size,
        options={k: str(v) for k, v in asdict(opts).items() if k not in ("root", "shard_dir")},
    )


def finish(
    opts: PreprocessOptions, results: list[SequenceResult], reader_issues: list[str]
) -> Manifest:
    manifest = manifest_of(opts, results, reader_issues)
    write_manifest(opts.shard_dir, manifest)
    return manifest


def plan(opts: PreprocessOptions) -> tuple[list[SequenceRef], list[str]]:
    """The sequences to process; a wrong root or empty dataset is one clear error."""
    reader = get_reader(opts.dataset, opts.root)
    sequences = reader.sequences()
    if not sequences:
        raise ClefError(
            f"{opts.root}: no {opts.dataset} sequences found (is this the dataset's root?)"
        )
    # a loop is left out of every reader's listing (it is no file and no folder): said here
    loops = loop_problems(opts.root)
    return sequences, reader.issues.messages + loops
