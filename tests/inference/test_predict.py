"""`clef predict` on synthetic videos with a model trained here: predicted AUs beat the
always-present predictor against the generator's ground truth; every frame gets a row (faceless
ones too); a truncated video keeps the frames read before the damage, with a warning naming
the frames decoded and promised (exit 0 when nothing else is wrong); faceless images, missing
files and unsupported formats each get a message; the exit code is 1 when any input could not
be read (the other inputs' tables are written), with no traceback."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from clef_core.inference.predictor import Predictor
from clef_core.method.augment import augment
from clef_core.method.checkpoint import save_checkpoint
from clef_core.method.config import load_config
from clef_core.method.labels import LabelSpace
from clef_core.method.metrics import au_f1
from clef_core.method.model import build_model, tokenizer_for
from clef_core.method.steps import finetune_step, make_optimizer
from clef_core.method.weights import au_pos_weights
from faces.decode import DecodeError, ShortVideo, iter_video
from synthetic.dynamics import AU_INDEX

pytestmark = pytest.mark.slow

BP4D_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
STEPS = 150


@pytest.fixture(scope="module")
def model_dir(shard_dir: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cpu-tiny stage-2 AU model trained here on the synthetic videos' even frames (the
    aligned crops of their shards, labels from the generator's truth): the odd frames are then
    scored through `clef predict`'s own detection and alignment. A within-subject split on
    purpose: it checks that predict reproduces what a model learned; cross-subject learning is
    the training pipeline's business (and measured there)."""
    import cv2

    truth = {
        (r["subject"].removesuffix(".mp4"), r["frame"]): r["au_intensity"]
        for r in pq.read_table(synth_root / "truth" / "videos.parquet").to_pylist()
        if r["visible"]
    }
    rows = [
        r
        for f in sorted((shard_dir / "video").glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]
    rows = [
        r
        for r in rows
        if r["face_found"] and r["frame"] % 2 == 0 and (r["subject"], r["frame"]) in truth
    ]
    images = np.stack(
        [cv2.imdecode(np.frombuffer(r["image"], np.uint8), 1)[..., ::-1] for r in rows]
    )
    labels = torch.tensor(
        [[int(truth[r["subject"], r["frame"]][AU_INDEX[a]] >= 2) for a in BP4D_AUS] for r in rows],
        dtype=torch.int8,
    )
    cfg = load_config("cpu-tiny", ["model.inline.image_size=64"])  # trained on 64-px views
    space = LabelSpace.aus(BP4D_AUS)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    tok = tokenizer_for(cfg.model)
    opt = make_optimizer(model, 1e-3, 0.01)
    weights = torch.tensor(au_pos_weights(labels.numpy()), dtype=torch.float32)
    gen, rng = torch.Generator().manual_seed(0), random.Random(0)
    for _ in range(STEPS):
        idx = torch.randint(0, len(rows), (32,), generator=gen)
        batch = {
            "image": augment(images[idx.numpy()], 64, cfg.stage2.augment, gen),
            "au": labels[idx],
        }
        loss, _ = finetune_step(model, batch, tok, space, cfg.stage2, weights, rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("model")
    return save_checkpoint(out, model, cfg, 2, STEPS, 0, space)


def _truth(synth_root: Path, clip: str) -> list[dict]:
    table = pq.read_table(synth_root / "truth" / "videos.parquet").to_pylist()
    return [r for r in table if r["subject"] == clip]


def test_predicted_aus_on_unseen_frames_beat_the_constant_predictor(
    synth_root: Path, model_dir: Path
) -> None:
    predictor = Predictor.from_uri(str(model_dir), batch_size=16)
    preds, targets = [], []
    import cv2

    for clip in ("clip_00.mp4", "clip_01.mp4"):
        truth = _truth(synth_root, clip)
        cap = cv2.VideoCapture(str(synth_root / "videos" / clip))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        results = list(predictor.predict_frames(frames))
        assert len(results) == len(frames) == len(truth)  # faceless frames keep their row
        for r, t in zip(results, truth, strict=True):
            if r.face_found and t["visible"] and t["frame"] % 2 == 1:  # frames not trained on
                preds.append([r.scores[f"AU{a:02d}_c"] for a in BP4D_AUS])
                targets.append([int(t["au_intensity"][AU_INDEX[a]] >= 2) for a in BP4D_AUS])
    pred, target = np.array(preds), np.array(targets)
    ours = au_f1(pred, target, BP4D_AUS).mean
    constant = au_f1(np.ones_like(target), target, BP4D_AUS).mean
    print(f"predict on synthetic videos: F1 {ours:.3f} vs always-present {constant:.3f}")
    assert ours > constant + 0.05


def _clef(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "predict", *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_bad_inputs_are_reported_and_the_rest_goes_on(
    synth_root: Path, model_dir: Path, tmp_path: Path
) -> None:
    import cv2

    avi = next((synth_root / "DISFA" / "Videos_LeftCamera").glob("*.avi"))
    n_frames = int(cv2.VideoCapture(str(avi)).get(cv2.CAP_PROP_FRAME_COUNT))
    broken = tmp_path / "broken.avi"
    data = avi.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # truncated half-way
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    out = tmp_path / "out"
    clip = synth_root / "videos" / "clip_01.mp4"
    run = _clef(str(clip), str(broken), str(blank), str(notes), str(tmp_path / "missing.mp4"),
                "--model", str(model_dir), "--out", str(out), "--plot")  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr  # some inputs bad: the others written
    assert "Traceback" not in run.stderr and "2 input(s) could not be read" in run.stdout
    text = run.stdout
    assert "missing.mp4: no such file" in text and "unsupported format '.txt'" in text
    # The broken video decoded its first half: a warning naming both counts, not a failure.
    assert "1 video(s) ended before their header's frame count" in text
    assert f"of the {n_frames} frames its header promises" in " ".join(text.split())
    rows = pq.read_table(out / "broken.parquet").to_pylist()
    decodable = []
    with pytest.raises(DecodeError):
        decodable.extend(i for i, _ in iter_video(broken))
    assert 0 < len(rows) == len(decodable) < n_frames  # every frame before the damage kept
    clip_rows = pq.read_table(out / "clip_01.parquet").to_pylist()
    assert len(clip_rows) == len(_truth(synth_root, "clip_01.mp4"))
    assert any(r["face_found"] == 0 and r["AU12_p"] is None for r in clip_rows)
    blank_rows = pq.read_table(out / "blank.parquet").to_pylist()
    assert [r["face_found"] for r in blank_rows] == [0]
    assert (out / "clip_01.png").stat().st_size > 5_000
    header = (out / "clip_01.csv").read_text().splitlines()[0].split(",")
    assert header[:9] == ['"frame"', '"timestamp_s"', '"file"', '"face_found"', '"face_score"',
                          '"face_x"', '"face_y"', '"face_w"', '"face_h"']  # fmt: skip
    marks = [f"x_{i}" for i in range(5)] + [f"y_{i}" for i in range(5)]
    assert header[9:19] == [f'"{c}"' for c in marks]
    # Landmarks in frame pixels: the eyes (points 0 and 1) where the renderer put them.
    truth = _truth(synth_root, "clip_01.mp4")
    for r, t in zip(clip_rows, truth, strict=True):
        if not r["face_found"]:
            assert all(r[c] is None for c in marks)
            continue
        eyes = np.array(t["eyes"]).reshape(2, 2)
        found = np.array([[r["x_0"], r["y_0"]], [r["x_1"], r["y_1"]]])
        iod = np.linalg.norm(eyes[1] - eyes[0])
        assert np.linalg.norm(found - eyes, axis=1).max() < 0.12 * iod, (r["frame"], found, eyes)

    nothing = _clef(str(notes), "--model", str(model_dir), "--out", str(out))
    assert nothing.returncode == 1 and "1 input(s) could not be read" in nothing.stdout
    assert "Traceback" not in nothing.stderr


def test_inputs_sharing_a_name_get_a_table_each(
    synth_root: Path, model_dir: Path, tmp_path: Path
) -> None:
    """Six inputs whose base names collide (issue #31: three tables were written for them,
    each over another): six tables, the renames reported, the file column the path as given."""
    import shutil

    import cv2

    face = cv2.imread(str(next((synth_root / "RAF-DB").rglob("*.jpg"))))
    given = ["a/face.jpg", "b/face.jpg", "x y.jpg", "x_y.jpg", "clip.png", "clip.mp4"]
    for name in given[:-1]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / name), face)
    shutil.copy(synth_root / "videos" / "clip_01.mp4", tmp_path / "clip.mp4")
    run = subprocess.run(
        [str(Path(sys.executable).with_name("clef")), "predict", *given, "--model",
         str(model_dir), "--out", "out"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    tables = sorted((tmp_path / "out").glob("*.parquet"))
    assert len(tables) == 6, [t.name for t in tables]
    files = {pq.read_table(t).column("file")[0].as_py() for t in tables}
    assert files == set(given)
    assert run.stdout.count("renamed:") == 6


def test_a_video_short_of_its_header_warns_and_exits_0(
    synth_root: Path, model_dir: Path, tmp_path: Path
) -> None:
    """Real recordings often end a few frames before their header's count: every decodable
    frame gets its row, one warning names both counts, and the exit code stays 0."""
    import cv2

    avi = next((synth_root / "DISFA" / "Videos_LeftCamera").glob("*.avi"))
    promised = int(cv2.VideoCapture(str(avi)).get(cv2.CAP_PROP_FRAME_COUNT))
    short = tmp_path / "short.avi"
    data = avi.read_bytes()
    short.write_bytes(data[: len(data) * 4 // 5])  # the header still promises every frame
    decoded = []
    with pytest.raises(ShortVideo):
        decoded.extend(i for i, _ in iter_video(short))
    run = _clef(str(short), "--model", str(model_dir), "--out", str(tmp_path / "out"))
    assert run.returncode == 0, run.stdout + run.stderr
    text = " ".join(run.stdout.split())
    assert f"decoded {len(decoded)} of the {promised} frames its header promises" in text
    rows = pq.read_table(tmp_path / "out" / "short.parquet").to_pylist()
    assert 0 < len(rows) == len(decoded) < promised


def test_zero_shot_labels_score_free_text(model_dir: Path, synth_root: Path) -> None:
    import cv2

    predictor = Predictor.from_uri(str(model_dir), labels=["a smile", "raised eyebrows"])
    assert predictor.columns()[-2:] == ["zs_0_a_smile", "zs_1_raised_eyebrows"]
    _, frame = cv2.VideoCapture(str(synth_root / "videos" / "clip_00.mp4")).read()
    (r,) = list(predictor.predict_frames([frame]))
    assert r.face_found
    assert r.scores["zs_0_a_smile"] + r.scores["zs_1_raised_eyebrows"] == pytest.approx(1.0)


def test_precision_auto_keeps_bf16_only_where_the_hardware_computes_it() -> None:
    from clef_core.inference.predictor import inference_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert inference_precision("bf16", "auto", cpu, native=True) == "bf16"  # the paper preset
    assert inference_precision("bf16", "auto", cpu, native=False) == "fp32"  # emulated: slower
    assert inference_precision("auto", "auto", cpu, native=True) == "fp32"  # cpu-tiny: as trained
    assert inference_precision("auto", "auto", cuda, native=True) == "bf16"
    assert inference_precision("fp32", "auto", cuda, native=True) == "fp32"
    assert inference_precision("auto", "bf16", cpu, native=False) == "bf16"  # asked: as asked


def test_bf16_scores_are_fp32_scores_within_bf16_rounding(
    model_dir: Path, synth_root: Path
) -> None:
    import cv2

    cap = cv2.VideoCapture(str(synth_root / "videos" / "clip_00.mp4"))
    frames = [cap.read()[1] for _ in range(8)]
    scores = {}
    for precision in ("fp32", "bf16"):
        predictor = Predictor.from_uri(str(model_dir), precision=precision)
        assert predictor.heads[0].precision == precision
        rows = [r for r in predictor.predict_frames(frames) if r.face_found]
        assert rows
        scores[precision] = np.array([[r.scores[f"AU{a:02d}_p"] for a in BP4D_AUS] for r in rows])
    gap = np.abs(scores["bf16"] - scores["fp32"])
    assert 0 < gap.max() < 0.05, gap.max()  # bf16 ran (scores moved), and only in rounding
