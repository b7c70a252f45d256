"""Probe results cached by what they depend on, so a rerun (the demo's second `make demo`)
does not fit the same probes again (issue #30: ~55 s of a 97 s rerun were the probes).

Key (ours): the probed model's content (a hash of every file of its checkpoint folder, or, for
a random init, the architecture's config and seed), the dataset's shards (the manifest's
`content_digest`: inputs, options, every shard's bytes), the fold, the augmentation settings that fix the decoded
size, and the probe's own settings (`PROBE_VERSION`, C, iterations, frames per sequence).
The checkpoint is hashed by content rather than by path: a unit trained again after a
damaged cache keeps its folder but not its weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import fields
from pathlib import Path

import torch

from clef_core.common.manifest import read_manifest
from clef_core.method.config import ExperimentConfig
from clef_core.training import probe as probes

log = logging.getLogger("clef.probe")

# Raise when the probes' method changes in a way their settings below do not show.
PROBE_VERSION = 2  # 2: au_f1_activity


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _model_part(cfg: ExperimentConfig, spec: str) -> object:
    if spec == probes.RANDOM:
        arch = cfg.model.model_copy(update={"init_weights": None})
        return {"random": arch.model_dump(mode="json"), "seed": cfg.seed}
    return {"checkpoint": _folder_digest(Path(spec))}


def probe_key(cfg: ExperimentConfig, spec: str, dataset: str, fold: int) -> str:
    """A hash of everything `probe(cfg, spec, dataset, fold)` on the CPU depends on."""
    m = read_manifest(cfg.data.shard_dir, dataset)
    payload = {
        "probe": [PROBE_VERSION, probes.C, probes.MAX_ITER, probes.FRAMES_PER_SEQUENCE],
        "model": _model_part(cfg, spec),
        "shards": [dataset, m.content_digest()],
        "fold": fold,
        "augment": [s.augment.model_dump(mode="json") for s in (cfg.stage1, cfg.stage2)],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def cache_file(cfg: ExperimentConfig, key: str) -> Path:
    return cfg.data.data_dir / "runs" / "probes" / f"{key}.json"


def read_cached(path: Path, spec: str) -> probes.ProbeResult | None:
    """The cached result, or None when there is none or it does not parse (said, recomputed)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        names = {f.name for f in fields(probes.ProbeResult)}
        if set(data) != names:
            raise ValueError(f"fields {sorted(set(data) ^ names)} differ")
        return probes.ProbeResult(**{**data, "model": spec})
    except (OSError, ValueError, TypeError) as err:
        log.warning("%s: a damaged cached probe (%s); probing again", path, err)
        return None


def cached_probe(
    cfg: ExperimentConfig, spec: str, dataset: str, fold: int,
    device: torch.device = torch.device("cpu"),
) -> probes.ProbeResult:  # fmt: skip
    """`probe.probe`, reused from the cache when nothing it depends on changed. Only CPU
    results are cached: a GPU's features differ in the last digits."""
    if device.type != "cpu":
        return probes.probe(cfg, spec, dataset, fold, device)
    path = cache_file(cfg, probe_key(cfg, spec, dataset, fold))
    result = read_cached(path, spec)
    if result is not None:
        log.info("probe %s on %s fold %d: reused %s", spec, dataset, fold, path)
        return result
    result = probes.probe(cfg, spec, dataset, fold, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result.as_dict(), indent=1))
    tmp.replace(path)  # whole or absent: a cut write is probed again, never half read
    return result
