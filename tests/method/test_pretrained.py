"""Initial weights by name (`clef_core.method.pretrained` over `clef_core.common.fetch`),
against a real HTTP server on 127.0.0.1 (tests/weights_server.py) in the Hugging Face hub's
URL layout and at plain URLs; no internet. The first use downloads into the cache and the
second makes no request; a cut or altered download is refused in one line and removed; a
TorchScript archive is converted once and then loaded with weights_only; offline or with no
network and an empty cache, one line names the file and its place; open_clip's `openai` tag
and FaRL's names resolve to where they are published; the weights' identity reaches the
config, meta.json, the MLflow params and the registered model's description."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from clef_core.common.errors import ClefError
from clef_core.common.fetch import RECORD
from clef_core.method.checkpoint import read_meta, save_checkpoint
from clef_core.method.config import MAIN, WeightsSource, load_config
from clef_core.method.model import build_clip, build_model, load_initial_weights, load_tensors
from clef_core.method.pretrained import fetch_weights
from tests.weights_server import COMMIT, Served, WeightsServer, weights_server

OPENAI_REPO = "timm/vit_base_patch16_clip_224.openai"  # open_clip's hub repo for ViT-B-16 openai
FARL64 = "FaRL-Base-Patch16-LAIONFace20M-ep64.pth"


@pytest.fixture(scope="module")
def tiny_clip() -> nn.Module:
    return build_clip(load_config("cpu-tiny").model)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[WeightsServer]:
    monkeypatch.setenv("CLEF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with weights_server() as served:
        monkeypatch.setenv("HF_ENDPOINT", served.url)
        yield served


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def same_weights(model: nn.Module, source: nn.Module) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())


def test_a_hub_file_is_downloaded_once_then_read_from_the_cache(
    server: WeightsServer, tiny_clip: nn.Module, tmp_path: Path
) -> None:
    body = safetensors_bytes(tiny_clip.state_dict())
    server.hub[("org/tiny-clip", "open_clip_model.safetensors")] = Served(body)
    first = fetch_weights("hf-hub:org/tiny-clip", "inline")
    assert first.path == tmp_path / "cache/hf/org/tiny-clip/open_clip_model.safetensors"
    pinned = f"{server.url}/org/tiny-clip/resolve/{COMMIT}/open_clip_model.safetensors"
    assert first.source == WeightsSource(name="hf-hub:org/tiny-clip", url=pinned, sha256=sha(body))
    assert f"GET /org/tiny-clip/resolve/{COMMIT}/open_clip_model.safetensors" in server.requests
    seen = len(server.requests)
    assert fetch_weights("hf-hub:org/tiny-clip", "inline") == first
    assert len(server.requests) == seen  # the second use touches no network
    model = build_clip(load_config("cpu-tiny").model)
    load_initial_weights(model, first.path)
    assert same_weights(model, tiny_clip)


def test_names_resolve_where_open_clip_and_farl_publish_them(
    server: WeightsServer, tmp_path: Path
) -> None:
    state = {"w": torch.ones(2)}
    server.hub[(OPENAI_REPO, "open_clip_model.safetensors")] = Served(safetensors_bytes(state))
    openai = fetch_weights("openai", "ViT-B-16-quickgelu")  # open_clip's registry entry
    assert (
        openai.source.url
        == f"{server.url}/{OPENAI_REPO}/resolve/{COMMIT}/open_clip_model.safetensors"
    )
    assert torch.equal(load_tensors(openai.path)["w"], state["w"])  # safetensors, read safely
    # A repo with open_clip's pickle only: its safetensors file is asked first, as open_clip does.
    server.hub[("org/bin-only", "open_clip_pytorch_model.bin")] = Served(torch_bytes(state))
    binary = fetch_weights("hf-hub:org/bin-only", "inline")
    assert binary.path.name == "open_clip_pytorch_model.bin"
    assert "HEAD /org/bin-only/resolve/main/open_clip_model.safetensors" in server.requests
    # FaRL's names: their published file under the release URL (here, a local mirror of it).
    server.files[f"/farl/{FARL64}"] = Served(torch_bytes({"state_dict": state}))
    farl = fetch_weights("farl-base-ep64", "inline", farl_url=f"{server.url}/farl/")
    assert farl.source.url == f"{server.url}/farl/{FARL64}" and farl.path.name == FARL64
    # FaRL publishes no SHA-256: the first download's is recorded and checked at later uses.
    record = json.loads((tmp_path / "cache" / RECORD).read_text())
    entry = record[farl.path.relative_to(tmp_path / "cache").as_posix()]
    assert entry == {"sha256": farl.source.sha256, "url": farl.source.url}
    with pytest.raises(ClefError, match=r"pretrained tag of ViT-B-16-quickgelu \(openai, "):
        fetch_weights("opneai", "ViT-B-16-quickgelu")


def test_a_cut_or_altered_download_is_refused_in_one_line_and_removed(
    server: WeightsServer, tmp_path: Path
) -> None:
    good = torch_bytes({"w": torch.arange(1000.0)})
    bad = good[:-8] + b"\0" * 8  # the same size, other bytes
    server.hub[("org/altered", "open_clip_model.safetensors")] = Served(bad, etag=sha(good))
    server.files["/w/pinned.pt"] = Served(bad)
    server.files["/w/cut.pt"] = Served(good, cut=True)
    cases = {
        "hf-hub:org/altered": "is not the published",  # against the hub's etag
        f"{server.url}/w/pinned.pt#sha256={sha(good)}": "is not the published",
        f"{server.url}/w/cut.pt": rf"cut \({len(good) // 2} of {len(good)} bytes\)",
    }
    for spec, message in cases.items():
        with pytest.raises(ClefError, match=message) as err:
            fetch_weights(spec, "inline")
        assert "\n" not in str(err.value) and "removed" in str(err.value)
    cache = tmp_path / "cache"
    assert [p for p in cache.rglob("*") if p.is_file() and ".cache" not in p.parts] == []
    # A file changed in the cache since its download: refused against the record, removed,
    # then fetched anew.
    server.files["/w/plain.pt"] = Served(good)
    plain = fetch_weights(f"{server.url}/w/plain.pt", "inline")
    plain.path.write_bytes(bad)
    with pytest.raises(ClefError, match="not the recorded when it was fetched") as err:
        fetch_weights(f"{server.url}/w/plain.pt", "inline")
    assert "\n" not in str(err.value) and not plain.path.exists()
    assert fetch_weights(f"{server.url}/w/plain.pt", "inline").source.sha256 == sha(good)


def test_a_torchscript_archive_is_converted_once_then_loaded_safely(
    server: WeightsServer,
    tiny_clip: nn.Module,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """OpenAI's files as published are TorchScript: converted by the project, once."""
    inputs = (torch.zeros(1, 3, 96, 96), torch.zeros(1, 77, dtype=torch.long))
    archive = tmp_path / "ViT-tiny.pt"
    with warnings.catch_warnings():  # the tracer's notes on shape checks it cannot record
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.jit.save(torch.jit.trace(tiny_clip.eval(), inputs, check_trace=False), archive)
    body = archive.read_bytes()
    server.files["/clip/ViT-tiny.pt"] = Served(body)
    spec = f"{server.url}/clip/ViT-tiny.pt#sha256={sha(body)}"
    with caplog.at_level(logging.WARNING):
        first = fetch_weights(spec, "inline")
    said = [m for m in caplog.messages if "converting the TorchScript archive" in m]
    assert len(said) == 1 and first.source.sha256 == sha(body)
    assert first.path == tmp_path / "cache" / "converted" / f"{sha(body)}.pt"
    torch.load(first.path, weights_only=True)  # plain tensors now
    opened: list[Any] = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: opened.append(a) or real_load(*a, **k))
    seen, caplog.records[:] = len(server.requests), []
    with caplog.at_level(logging.WARNING):
        assert fetch_weights(spec, "inline") == first
    assert opened == [] and len(server.requests) == seen and not caplog.messages
    model = build_clip(load_config("cpu-tiny").model)
    load_initial_weights(model, first.path)
    assert same_weights(model, tiny_clip)


def test_offline_or_unreachable_with_an_empty_cache_says_which_file_to_place_where(
    server: WeightsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    place = tmp_path / "cache/hf" / OPENAI_REPO / "open_clip_model.safetensors"
    with pytest.raises(ClefError) as err:
        fetch_weights("openai", "ViT-B-16-quickgelu")
    text = str(err.value)
    published = f"{server.url}/{OPENAI_REPO}/resolve/main/open_clip_model.safetensors"
    assert "\n" not in text and f"download {published} and place it at {place}" in text
    assert server.requests == []
    # The file placed there by hand: used offline (its hash recorded from then on).
    place.parent.mkdir(parents=True)
    place.write_bytes(safetensors_bytes({"w": torch.ones(1)}))
    assert fetch_weights("openai", "ViT-B-16-quickgelu").path == place and server.requests == []
    # Online but with no network (a server that is gone): the same one line.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with weights_server() as gone:
        url = gone.url
    with pytest.raises(ClefError, match=rf"cannot reach .* place it at \S+/{FARL64}$"):
        fetch_weights("farl-base-ep64", "inline", farl_url=url)
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(ClefError, match=r"cannot reach .* place it at \S+/org/x/open_clip_model"):
        fetch_weights("hf-hub:org/x", "inline")


class _Registry:
    """MLflow's client, as `flush_file` uses it to register a model version."""

    def __init__(self) -> None:
        self.versions: list[tuple[str, str | None]] = []

    def create_registered_model(self, name: str) -> None:
        pass

    def get_run(self, run_id: str) -> Any:
        return SimpleNamespace(info=SimpleNamespace(artifact_uri=f"file:///runs/{run_id}"))

    def create_model_version(self, name: str, source: str, **kw: Any) -> Any:
        self.versions.append((name, kw.get("description")))
        return SimpleNamespace(version=1)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        pass


def test_the_weights_identity_reaches_config_meta_params_and_registry(
    server: WeightsServer, tiny_clip: nn.Module, tmp_path: Path
) -> None:
    from clef_core.run.reproduction import ReproductionParams, plan_reproduction
    from clef_core.run.unit import model_description
    from clef_core.tracking.spool import flush_file

    body = safetensors_bytes(tiny_clip.state_dict())
    server.hub[("org/tiny-clip", "open_clip_model.safetensors")] = Served(body)
    params = ReproductionParams(
        preset="cpu-tiny", datasets=["bp4d"], folds=[1], data_dir=tmp_path / "data",
        ablations=["CLIP-I"], weights={"farl": "hf-hub:org/tiny-clip"},
    )  # fmt: skip
    planned = plan_reproduction(params)
    main, source = planned.main, planned.main.model.init_source
    assert source is not None and source.name == "hf-hub:org/tiny-clip"
    assert source.sha256 == sha(body) and f"/resolve/{COMMIT}/" in source.url
    clip_row = planned.configs["CLIP-I"].model  # no clip= given: from scratch, no source
    assert clip_row.init_weights is None and clip_row.init_source is None
    assert main.flat()["model.init_source.sha256"] == sha(body)  # the MLflow run's params
    folder = save_checkpoint(tmp_path / "ckpt", build_model(main.model), main, 1, 0, 0)
    assert read_meta(folder)["initial_weights"] == source.model_dump()
    description = model_description(main, planned.plans[MAIN][-1])
    assert source.describe() in description
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [
        {"op": "open", "uri": "stand-in", "run": "r1"},
        {"op": "register", "name": "clef-bp4d", "artifact_path": "model",
         "description": description, "run": "r1"},
    ]  # fmt: skip
    (spool / "r1.host-1-0.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    registry = _Registry()
    flush_file(spool / "r1.host-1-0.jsonl", registry)
    assert registry.versions == [("clef-bp4d", description)]
