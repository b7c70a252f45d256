"""Initial weights by name, as open_clip users name them, fetched once and loaded safely.

A name is one of:
- an open_clip pretrained tag of the configured architecture (`openai`, `laion2b_s34b_b88k`,
  ...: `open_clip.list_pretrained_tags_by_model`), fetched where open_clip's registry says,
  from the Hugging Face hub when it names a repo (as open_clip prefers), else its URL;
- `hf-hub:ORG/NAME` (open_clip's weights file of that hub repo) or `hf-hub:ORG/NAME/FILE`;
- `farl-base-ep16`, `farl-base-ep64`: FaRL's published ViT-B/16 checkpoints (`FARL`);
- an http(s) URL (`#sha256=HEX` on it pins its hash), or a local file.
Remote files are cached and checked by `clef_core.common.fetch`. A TorchScript archive (OpenAI's
files as published) is converted to a plain state dict once, by `convert_torchscript`, the only
place in the project that calls `torch.jit.load`; everything loads the converted file with
`weights_only=True` (`clef_core.method.model.load_tensors`).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from clef_core.common.download import Remote
from clef_core.common.errors import ClefError
from clef_core.common.fetch import (
    cache_root,
    check_cached,
    fetch,
    hub_remote,
    remember,
    sha256_of,
    url_remote,
)
from clef_core.method.config import WeightsSource

log = logging.getLogger(__name__)
FARL_RELEASES = "https://github.com/FacePerceiver/FaRL/releases/download/pretrained_weights/"
FARL = {  # FaRL's names for them; they publish no SHA-256: the first download's is recorded
    "farl-base-ep16": "FaRL-Base-Patch16-LAIONFace20M-ep16.pth",
    "farl-base-ep64": "FaRL-Base-Patch16-LAIONFace20M-ep64.pth",
}
# What open_clip fetches from a hub repo named without a file (`download_pretrained_from_hf`):
# the safetensors file when there is one, else the pickle.
HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


@dataclass(frozen=True)
class InitialWeights:
    path: Path  # a plain state dict (torch or safetensors), to load with weights_only
    source: WeightsSource


def fetch_weights(
    spec: str,
    arch: str,
    what: str = "initial weights",
    farl_url: str = FARL_RELEASES,
    root: Path | None = None,
) -> InitialWeights:
    """The weights `spec` names, for a model of open_clip architecture `arch`, as a file of
    plain tensors, with their identity. `farl_url`: where FaRL's files are published (a
    mirror); the hub is `HF_ENDPOINT`'s. `what` names them in messages. Raises ClefError."""
    root = root or cache_root()
    if _is_path(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ClefError(f"the {what} file {spec} does not exist")
        source = WeightsSource(name=spec, url=str(path.resolve()), sha256=sha256_of(path))
    else:
        fetched = fetch(_remotes(spec, arch, what, farl_url, root), root)
        path, source = (
            fetched.path,
            WeightsSource(name=spec, url=fetched.url, sha256=fetched.sha256),
        )
    if is_torchscript(path):
        path = _converted(path, source, root)
    return InitialWeights(path, source)


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip with code in it (`torch.save` archives hold only data)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in n or n.endswith("/constants.pkl") for n in archive.namelist())


def convert_torchscript(archive: Path, out: Path) -> Path:
    """The archive's tensors as a plain state dict at `out`. The one place in the project
    that opens a TorchScript archive: `torch.jit.load` builds the archive's code, so it runs
    once per file, for a file the user named whose SHA-256 was checked or recorded."""
    log.warning(
        "converting the TorchScript archive %s to a plain state dict at %s: torch.jit.load "
        "runs once, here; later runs load the state dict safely (weights_only)",
        archive,
        out,
    )
    module = torch.jit.load(str(archive), map_location="cpu")
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f"{out.name}.part")
    torch.save(state, part)
    os.replace(part, out)  # complete or absent: a cut conversion is redone, not loaded
    return out


def _converted(archive: Path, source: WeightsSource, root: Path) -> Path:
    """The converted state dict, made once per archive content and checked at each use."""
    out = root / "converted" / f"{source.sha256}.pt"
    if out.is_file():
        check_cached(out, root, source.url)
        return out
    convert_torchscript(archive, out)
    remember(root, out, sha256_of(out), source.url)
    return out


def _is_path(spec: str) -> bool:
    if spec.startswith(("http://", "https://", "hf-hub:")):
        return False
    return (
        Path(spec).expanduser().exists()
        or "/" in spec
        or os.sep in spec
        or spec.startswith(("~", "."))
        or spec.lower().endswith(WEIGHT_SUFFIXES)
    )


def _remotes(spec: str, arch: str, what: str, farl_url: str, root: Path) -> Sequence[Remote]:
    """Where the named weights are published, in the order to try them."""
    if spec.startswith(("http://", "https://")):
        return [url_remote(spec, root)]
    if spec.startswith("hf-hub:"):
        repo, _, filename = spec.removeprefix("hf-hub:").strip("/").partition("/")
        name, _, filename = filename.partition("/")
        if not repo or not name:
            raise ClefError(f"{what} {spec!r}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME/FILE")
        return _hub(f"{repo}/{name}", filename, root)
    if spec.lower() in FARL:
        return [url_remote(farl_url.rstrip("/") + "/" + FARL[spec.lower()], root)]
    return _open_clip_tag(spec, arch, what, root)


def _hub(repo: str, filename: str, root: Path) -> list[Remote]:
    """A hub repo's weights file; without a name, open_clip's (safetensors first). With a
    .bin/.pth name, its safetensors twin first, as open_clip's `_get_safe_alternatives`."""
    if not filename:
        return [hub_remote(repo, f, root) for f in HUB_FILES]
    stem, dot, suffix = filename.rpartition(".")
    twins = [f"{stem}.safetensors"] if dot and suffix in ("bin", "pth") else []
    return [hub_remote(repo, f, root) for f in [*twins, filename]]


def _open_clip_tag(spec: str, arch: str, what: str, root: Path) -> list[Remote]:
    from clef_core.common.runtime import prepare_torchvision

    prepare_torchvision()  # before open_clip imports torchvision (CPU torch, CUDA torchvision)
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    cfg = get_pretrained_cfg(arch, spec)
    if not cfg:
        tags = ", ".join(list_pretrained_tags_by_model(arch)) or f"none for {arch!r}"
        raise ClefError(
            f"{what} {spec!r}: expected a file, an http(s) URL, hf-hub:ORG/NAME, "
            f"{' or '.join(FARL)}, or an open_clip pretrained tag of {arch} ({tags})"
        )
    if cfg.get("hf_hub"):  # "ORG/NAME/" (open_clip's file) or "ORG/NAME/FILE"
        repo, filename = os.path.split(cfg["hf_hub"])
        return _hub(repo, filename, root)
    return [url_remote(cfg["url"], root)]
