"""`clef predict`: per-frame AU / expression tables for any mix of videos, images and folders.

Each input gets `<out>/<name>.csv` and `.parquet`, one row per frame read (with `--every N`,
per N-th frame), faces or not; a frame without a face has face_found = 0 and empty scores.
A corrupt or truncated video keeps the rows read before the damage; every problem is one
message for its input, and the other inputs go on.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clef_core.common.paths import loop_problems, missing
from clef_core.inference.predictor import Predictor
from faces.decode import DecodeError, ShortVideo, iter_timed_video, read_image
from preprocessing.readers.video import IMAGE_EXT, VIDEO_EXT, safe_key


@dataclass
class InputResult:
    source: str
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    error: str | None = None  # what went wrong (rows read before it are kept)
    warning: str | None = None  # a video that ended before its header's frame count
    table: Path | None = None
    rows: list[dict] = field(default_factory=list, repr=False)


def expand(inputs: list[Path]) -> tuple[list[tuple[str, list[Path]]], list[str]]:
    """(name, files) work items: each video alone, each folder's images together, each image
    alone; and one message per input that is missing or of an unsupported format."""
    items: list[tuple[str, list[Path]]] = []
    problems: list[str] = []
    for path in inputs:
        if not path.exists():
            problems.append(missing(path))
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            problems += loop_problems(path)
            items += [
                (safe_key(str(p.relative_to(path.parent))), [p])
                for p in files
                if p.suffix.lower() in VIDEO_EXT
            ]
            folders: dict[Path, list[Path]] = {}
            for p in files:
                if p.suffix.lower() in IMAGE_EXT:
                    folders.setdefault(p.parent, []).append(p)
            items += [(safe_key(str(f.relative_to(path.parent))), ps) for f, ps in folders.items()]
            if not any(p.suffix.lower() in VIDEO_EXT | IMAGE_EXT for p in files):
                problems.append(f"{path}: no video or image files in it")
        elif path.suffix.lower() in VIDEO_EXT | IMAGE_EXT:
            items.append((safe_key(path.stem), [path]))
        else:
            known = ", ".join(sorted(VIDEO_EXT | IMAGE_EXT))
            problems.append(f"{path}: unsupported format {path.suffix!r} (expected one of {known})")
    return items, problems


def unique_names(
    items: list[tuple[str, list[Path]]],
) -> tuple[list[tuple[str, list[Path]]], list[str]]:
    """Each work item's table name made unique in the run: its base name where no other input
    shares it; else the path as given, suffix kept (a/face.jpg and b/face.jpg give a_face.jpg
    and b_face.jpg; clip.png and clip.mp4 give clip.png and clip.mp4); else a counter. Without
    this one table was written over the other. One note per renamed item."""
    counts = Counter(name for name, _ in items)
    named: list[tuple[str, list[Path]]] = []
    notes: list[str] = []
    taken: set[str] = set()
    for name, files in items:
        source = files[0] if len(files) == 1 else files[0].parent
        new = name if counts[name] == 1 else safe_key(str(source))
        base, k = new, 1
        while new in taken:
            k += 1
            new = f"{base}-{k}"
        taken.add(new)
        named.append((new, files))
        if new != name:
            notes.append(f"{source}: table {new} ({name} is another input's name too)")
    return named, notes


def _frames(files: list[Path], every: int, meta: dict) -> Iterator[np.ndarray]:
    """BGR frames of one work item; fills meta["index"] / meta["time"] / meta["file"]."""
    if len(files) == 1 and files[0].suffix.lower() in VIDEO_EXT:
        # the container's timestamps: a variable-frame-rate video's are not index / fps
        for index, seconds, frame in iter_timed_video(files[0], every=every):
            meta["index"].append(index)
            meta["time"].append(seconds)
            meta["file"].append(str(files[0]))  # the path as given: base names repeat
            yield frame
        return
    for index, path in enumerate(files[::every]):
        try:
            image = read_image(path)
        except DecodeError as err:
            meta["unreadable"].append(str(err))
            continue
        meta["index"].append(index * every)
        meta["time"].append(float("nan"))
        meta["file"].append(str(path))
        yield image


LANDMARK_COLUMNS = [f"x_{i}" for i in range(5)] + [f"y_{i}" for i in range(5)]


def landmark_columns(points: np.ndarray | None) -> dict[str, float | None]:
    """x_0..x_4, y_0..y_4 in frame pixels (image-left eye, image-right eye, nose tip, mouth
    left, mouth right); empty where no face was found."""
    if points is None:
        return dict.fromkeys(LANDMARK_COLUMNS)
    values = np.concatenate([points[:, 0], points[:, 1]])
    return {c: round(float(v), 2) for c, v in zip(LANDMARK_COLUMNS, values, strict=True)}


def predict_item(
    predictor: Predictor, name: str, files: list[Path], out: Path, every: int
) -> InputResult:
    """Predict one work item and write its CSV + Parquet table."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    result = InputResult(str(files[0] if len(files) == 1 else files[0].parent))
    meta: dict[str, list] = {"index": [], "time": [], "file": [], "unreadable": []}
    start = time.perf_counter()
    columns = predictor.columns()
    try:
        video = len(files) == 1 and files[0].suffix.lower() in VIDEO_EXT
        frames = predictor.predict_frames(_frames(files, every, meta), every if video else None)
        for i, r in enumerate(frames):
            x, y, w, h = r.box
            row = {"frame": meta["index"][i], "timestamp_s": meta["time"][i], "file": meta["file"][i],
                   "face_found": int(r.face_found), "face_score": r.face_score,
                   "face_x": x, "face_y": y, "face_w": w, "face_h": h}  # fmt: skip
            row.update(landmark_columns(r.points))
            row.update({c: r.scores.get(c) for c in columns})
            result.rows.append(row)
            result.faces += r.face_found
    except ShortVideo as err:  # every decodable frame has its row: a warning, not a failure
        result.warning = str(err)
    except DecodeError as err:
        result.error = str(err)
    if meta["unreadable"]:
        result.error = "; ".join(meta["unreadable"][:3]) + (
            f" (+{len(meta['unreadable']) - 3} more)" if len(meta["unreadable"]) > 3 else ""
        )
    result.frames = len(result.rows)
    result.seconds = time.perf_counter() - start
    if result.rows:
        out.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(result.rows)
        pq.write_table(table, out / f"{name}.parquet")
        pcsv.write_csv(table, out / f"{name}.csv")
        result.table = out / f"{name}.csv"
    return result


def plot_item(result: InputResult, predictor: Predictor, path: Path) -> Path:
    """AU probabilities over time (a heat map) and the expression track."""
    from matplotlib.figure import Figure  # outside pyplot: no backend chosen or changed

    cols = predictor.columns()
    au = [c for c in cols if c.startswith("AU") and c.endswith("_p")]
    has_fer = "expression" in cols
    frames = [r["frame"] for r in result.rows]
    n = int(bool(au)) + int(has_fer)
    fig = Figure(figsize=(10, 1.2 + 2.6 * max(n, 1)))
    axes = fig.subplots(max(n, 1), 1, squeeze=False)
    k = 0
    if au:
        grid = np.array([[np.nan if r[c] is None else r[c] for r in result.rows] for c in au])
        ax = axes[k, 0]
        im = ax.imshow(grid, aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest",
                       extent=(frames[0], frames[-1] + 1, len(au) - 0.5, -0.5))  # fmt: skip
        ax.set_yticks(range(len(au)), [c[:-2] for c in au], fontsize=7)
        ax.set_title("AU probability per frame (blank: no face)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02)
        k += 1
    if has_fer:
        classes = [c[:-2] for c in cols if c.endswith("_p") and not c.startswith(("AU", "zs_"))]
        ax = axes[k, 0]
        ys = [classes.index(r["expression"]) if r["expression"] else np.nan for r in result.rows]
        ax.plot(frames, ys, ".", ms=3)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_title("expression per frame", fontsize=9)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
