"""Bombs refused before they are inflated or decoded: a BP4D+ zip member that inflates to
2 GB of zeros and a 20000 x 20000 PNG are each counted unreadable and skipped with their
reason, the run goes on with the other frames, and the process's peak RSS stays under 1 GB
(measured in a child process, so this test's own memory does not count)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from synthetic.spec import encode_jpeg, zip_add

BOMB_BYTES = 2 * 2**30  # what the member inflates to
GOOD = [1000, 1001, 1002]  # frame numbers of the real frames beside it


def _face_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_jpeg(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))


def _write_zeros(archive: zipfile.ZipFile, name: str, size: int) -> None:
    """A member of `size` zero bytes, streamed in 16 MiB pieces (never whole in memory)."""
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    piece = bytes(16 * 2**20)
    with archive.open(info, "w", force_zip64=True) as out:
        for _ in range(size // len(piece)):
            out.write(piece)


@pytest.fixture(scope="module")
def bomb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BP4D+ layout: F002.zip holding T1's three frames and `F002/T1/9999.jpg`, 2 GB of
    zeros inflated (a few MB in the zip), and T1's label file."""
    root = tmp_path_factory.mktemp("bomb") / "BP4D+"
    top = root / "2D+3D"
    top.mkdir(parents=True)
    with zipfile.ZipFile(top / "F002.zip", "w") as archive:
        for number in GOOD:
            zip_add(archive, f"F002/T1/{number}.jpg", _face_jpeg(number))
        _write_zeros(archive, "F002/T1/9999.jpg", BOMB_BYTES)
    labels = root / "AUCoding" / "AU_OCC"
    labels.mkdir(parents=True)
    rows = ["frame,1,2,4", *(f"{n},1,0,0" for n in GOOD)]
    (labels / "F002_T1.csv").write_text("\n".join(rows) + "\n")
    return root


def _in_child(code: str) -> tuple[dict, float]:
    """Run `code`, which sets `out` (a dict), in a fresh Python; `out` and the child's own
    peak RSS in MB. Read as VmHWM (the peak of the child's own address space), not
    getrusage's ru_maxrss, which Linux carries over fork and exec: a child of a large pytest
    process would report its parent's peak."""
    code += (
        "\nimport json, re\n"
        "status = open('/proc/self/status').read()\n"
        "out['rss_kib'] = int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return out, out["rss_kib"] / 1024


def test_a_zip_bomb_member_is_skipped_and_the_run_goes_on(bomb_root: Path, tmp_path: Path) -> None:
    assert (bomb_root / "2D+3D/F002.zip").stat().st_size < 20 * 2**20
    code = f"""
from pathlib import Path
from preprocessing.pipeline import PreprocessOptions, finish, plan, process_sequence
opts = PreprocessOptions(dataset="bp4d_plus", root=Path({str(bomb_root)!r}),
                         shard_dir=Path({str(tmp_path / "shards")!r}), image_size=112)
sequences, issues = plan(opts)
results = [process_sequence(opts, s) for s in sequences]
m = finish(opts, results, issues)
out = {{"rows": m.rows, "unreadable": m.unreadable, "examples": m.unreadable_examples,
       "failed": [r.failed for r in results]}}
"""
    out, peak_mb = _in_child(code)
    assert out["rows"] == len(GOOD) and out["failed"] == [None]
    assert out["unreadable"] == 1
    (reason,) = out["examples"]
    assert "F002/T1/9999.jpg" in reason and "CLEF_MAX_MEMBER_BYTES" in reason
    assert f"{BOMB_BYTES} bytes" in reason
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"


def test_a_huge_png_is_skipped_by_predict_reading(tmp_path: Path) -> None:
    from PIL import Image

    huge = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(huge)  # 1 bit a pixel: 50 MB here, KBs on disk
    assert huge.stat().st_size < 5 * 2**20
    good = tmp_path / "good.jpg"
    good.write_bytes(_face_jpeg(1))
    code = f"""
from pathlib import Path
from flows.predict import _frames
meta = {{"index": [], "time": [], "file": [], "unreadable": []}}
frames = list(_frames([Path({str(huge)!r}), Path({str(good)!r})], 1, meta))
out = {{"frames": len(frames), "files": meta["file"], "unreadable": meta["unreadable"]}}
"""
    out, peak_mb = _in_child(code)
    assert out["frames"] == 1 and out["files"] == [str(good)]
    (reason,) = out["unreadable"]
    assert (
        str(huge) in reason and "400000000 pixels" in reason and "CLEF_MAX_IMAGE_PIXELS" in reason
    )
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"


def test_the_limits_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faces.decode import DecodeError, read_image

    path = tmp_path / "small.jpg"
    path.write_bytes(_face_jpeg(2))  # 160 x 120
    assert read_image(path).shape == (120, 160, 3)
    monkeypatch.setenv("CLEF_MAX_IMAGE_PIXELS", str(160 * 120 - 1))
    with pytest.raises(DecodeError, match="160x120 pixels, over the limit of 19199"):
        read_image(path)
