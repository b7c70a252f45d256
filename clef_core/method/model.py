"""The CLIP model (open_clip) built from the config, initial weights, tokenizer, and the CLEF
wrapper that adds the learnable logit scale clamp and the optional linear head (ablation)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from clef_core.common.errors import ClefError
from clef_core.common.runtime import prepare_torchvision
from clef_core.method.config import ModelConfig

prepare_torchvision()  # before open_clip imports torchvision (CPU torch, CUDA torchvision)
import open_clip  # noqa: E402
from open_clip.model import CLIPTextCfg, CLIPVisionCfg  # noqa: E402


def build_clip(cfg: ModelConfig) -> nn.Module:
    """An open_clip CLIP: the named architecture (random init), or the inline small config."""
    if cfg.inline is None:
        try:
            return open_clip.create_model(cfg.arch, pretrained=None)
        except RuntimeError as err:
            raise ClefError(f"unknown open_clip architecture {cfg.arch!r}: {err}") from None
    c = cfg.inline
    vision = CLIPVisionCfg(
        layers=c.vision_layers,
        width=c.vision_width,
        head_width=c.vision_head_width,
        patch_size=c.patch_size,
        image_size=c.image_size,
    )
    text = CLIPTextCfg(
        context_length=c.context_length,
        width=c.text_width,
        heads=c.text_heads,
        layers=c.text_layers,
    )
    return open_clip.model.CLIP(c.embed_dim, vision, text, quick_gelu=cfg.quick_gelu)


def tokenizer_for(cfg: ModelConfig) -> open_clip.tokenizer.SimpleTokenizer:
    """open_clip's BPE tokenizer (its vocabulary ships in the package: works offline)."""
    length = cfg.inline.context_length if cfg.inline else 77
    return open_clip.tokenizer.SimpleTokenizer(context_length=length)


@dataclass(frozen=True)
class WeightReport:
    loaded: int  # model keys filled from the checkpoint
    dropped: list[str]  # checkpoint keys the model does not have (e.g. FaRL's MIM head)


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)`: tensors and plain containers only, never pickled code.
    A file it refuses (a pickle with code in it, random bytes, a cut archive) is bad input:
    one line saying what was expected, never torch's advice to load it unsafely."""
    import pickle

    if path.suffix == ".safetensors":  # the hub's weights files: tensors only by design
        return _load_safetensors(path, map_location)
    try:
        with warnings.catch_warnings():  # torch's "dispatching to torch.jit.load": it refuses
            warnings.filterwarnings("ignore", message=".*TorchScript archive")
            return torch.load(path, map_location=map_location, weights_only=True)
    except RuntimeError as err:
        if "TorchScript" in str(err) or "constants.pkl" in str(err):
            # OpenAI's released CLIP files are TorchScript archives: loading one runs its code,
            # so it is never done here (no torch.jit.load fallback). The user converts a file
            # they trust once, knowingly.
            raise ClefError(
                f"{path} is a TorchScript archive, which safe (weights_only) loading refuses: "
                "loading it can run code. Convert a file you trust once with: python -c "
                f"\"import torch; torch.save(torch.jit.load('{path}', map_location='cpu')"
                f".state_dict(), '{path.with_suffix('.state.pt')}')\" and pass the .state.pt file "
                "(clef reproduce --weights clip=PATH converts it once itself)"
            ) from None
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        # torch's text for a refused pickle suggests weights_only=False: not repeated here.
        problem = f"{type(err).__name__}, refused by safe loading (objects other than tensors)"
    raise ClefError(
        f"{path}: expected a PyTorch file of tensors (a state dict, as clef saves), found one "
        f"it cannot read safely ({problem})"
    )


def _load_safetensors(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise ClefError(
            f"{path}: expected a safetensors file of tensors, found one it cannot read ({err})"
        ) from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ClefError(f"initial weights file not found: {path}")
    obj = load_tensors(path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise ClefError(
            f"{path}: expected a state dict (or a dict with 'state_dict'), found {type(obj).__name__}"
        )
    return state


def load_initial_weights(model: nn.Module, path: Path) -> WeightReport:
    """Load a FaRL or OpenAI CLIP checkpoint (OpenAI key names) into an open_clip CLIP.

    Keeps only the keys the model has, loads non-strictly, and fails loudly when any model
    key is missing or a shape differs: a half-loaded backbone must never train silently.
    """
    state = _read_state_dict(path)
    own = model.state_dict()
    for prefix in ("module.", "clip."):  # wrappers some checkpoints carry
        if not own.keys() & state.keys() and any(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    missing = sorted(own.keys() - state.keys())
    if missing:
        raise ClefError(
            f"{path} lacks {len(missing)} of the model's {len(own)} weights (first: {missing[:3]}); "
            "expected a CLIP checkpoint of the configured architecture"
        )
    wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ClefError(
            f"{path}: weight {k} has shape {tuple(state[k].shape)}, the model expects {tuple(own[k].shape)}"
        )
    model.load_state_dict({k: state[k] for k in own}, strict=False)
    return WeightReport(loaded=len(own), dropped=sorted(state.keys() - own.keys()))


def per_image_gray(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> the channel mean standardised per image, repeated on 3 channels: the
    same output whatever the image's brightness and contrast, and no colour
    (ModelConfig.input_norm)."""
    gray = images.mean(1, keepdim=True)
    mean, std = gray.mean((2, 3), keepdim=True), gray.std((2, 3), keepdim=True)
    return ((gray - mean) / (std + 1e-4)).expand(-1, 3, -1, -1)


class ClefModel(nn.Module):
    """CLIP encoders + CLEF's learnable 1/tau (clamped like CLIP) + an optional linear head."""

    def __init__(
        self,
        clip: nn.Module,
        config: ModelConfig,
        logit_scale_init: float = 1 / 0.07,
        logit_scale_max: float = 100.0,
    ):
        super().__init__()
        self.clip = clip
        self.config = config  # what it was built from (its tokenizer follows it)
        self.logit_scale_max = logit_scale_max
        with torch.no_grad():
            self.clip.logit_scale.fill_(math.log(logit_scale_init))
        self.head: nn.Linear | None = None

    @property
    def image_size(self) -> int:
        """Side of the square input the image tower expects."""
        size = self.clip.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    @property
    def embed_dim(self) -> int:
        return int(self.clip.text_projection.shape[1])

    def set_linear_head(self, n_classes: int) -> None:
        """Ablation without N and D: classes from a linear layer on the image feature."""
        self.head = nn.Linear(self.embed_dim, n_classes)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised images [B, 3, H, W] -> unit image features [B, d]."""
        if self.config.input_norm == "per_image_gray":
            images = per_image_gray(images)
        return F.normalize(self.clip.encode_image(images), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(tokens), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().clamp(max=self.logit_scale_max)

    def forward(
        self, images: Sequence[torch.Tensor] = (), texts: Sequence[torch.Tensor] = ()
    ) -> Encoded:
        """Everything a training step needs from the model, in one call: under DDP
        (`clef_core.method.dist.distribute`) a step reaches its parameters only through
        `forward`, once per backward pass."""
        z_images = [self.encode_image(x) for x in images]
        return Encoded(
            images=z_images,
            texts=[self.encode_text(t) for t in texts],
            scale=self.logit_scale(),
            head=None if self.head is None else [self.head(z).float() for z in z_images],
        )


class Encoded(NamedTuple):
    """`ClefModel.forward`'s output (a named tuple: DDP's output handling finds the tensors in
    it, which a plain dataclass would hide)."""

    images: list[torch.Tensor]  # unit image features [B, d] of each image batch
    texts: list[torch.Tensor]  # unit text features [T, d] of each token batch
    scale: torch.Tensor  # the clamped 1/tau
    head: list[torch.Tensor] | None  # the linear head's logits of each image batch (ablation)


def build_model(
    cfg: ModelConfig, logit_scale_init: float = 1 / 0.07, logit_scale_max: float = 100.0
) -> ClefModel:
    clip = build_clip(cfg)
    if cfg.init_weights is not None:
        load_initial_weights(clip, cfg.init_weights)
    return ClefModel(clip, cfg, logit_scale_init, logit_scale_max)
