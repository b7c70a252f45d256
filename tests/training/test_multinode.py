"""A training unit on a two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a
head and a second node, each its own raylet and object store, bound to 127.0.0.1), one Ray
Train worker per node (each asks for more than half a node's CPUs), the stage-1 contrastive
loss gathered across them. The nodes share no folder: shards, the decoded cache, Ray Train's
checkpoints and the unit's result are in object storage (the S3 server of `tests.s3server`),
as a real cluster's would be. The result means what a one-node run's does: the configured
epochs and steps, finite losses, a checkpoint that loads into the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from clef_core.common.storage import location, upload_shards
from clef_core.method.checkpoint import load_weights, read_meta
from clef_core.method.config import load_config
from clef_core.method.model import build_model
from clef_core.run.unit import run_unit
from clef_core.training.protocol import Unit
from clef_core.training.unit_cache import stored_unit_dir
from tests.ray_state import train_workers
from tests.s3server import BUCKET, s3_server

pytestmark = [pytest.mark.slow, pytest.mark.server]

SHARDS, STORE = f"s3://{BUCKET}/multi/shards", f"s3://{BUCKET}/multi/store"
NODE_CPUS, STEPS = 2, 3


@pytest.fixture(scope="module")
def two_nodes(shard_dir: Path) -> Iterator[list[str]]:
    """The S3 server with the BP4D shards, then the cluster (whose processes inherit its
    address); this process is its driver. Yields the nodes' ids; stops what it started."""
    import ray
    from ray.cluster_utils import Cluster

    from clef_core.common.runtime import _confine_to_loopback, init_ray

    with s3_server():
        upload_shards(shard_dir / "bp4d", location(SHARDS) / "bp4d")
        _confine_to_loopback()  # every node on 127.0.0.1, as our local instances are
        node = {"num_cpus": NODE_CPUS, "node_ip_address": "127.0.0.1"}
        cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        try:
            cluster.add_node(**node)
            cluster.wait_for_nodes()
            init_ray(cluster.address)
            ray.data.DataContext.get_current().enable_progress_bars = False
            yield [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        finally:
            ray.shutdown()
            cluster.shutdown()  # the processes this cluster started, by their handles


def test_stage1_unit_on_two_nodes(two_nodes: list[str], tmp_path: Path) -> None:
    assert len(two_nodes) == 2
    cfg = load_config(
        "cpu-tiny",
        [
            f"data.data_dir={tmp_path}", f"data.shards={SHARDS}", f"data.storage={STORE}",
            "stage1.epochs=1", f"stage1.steps_per_epoch={STEPS}", "stage1.batch_size=8",
            # More than half a node each: one worker per node. 1 thread each (int(1.5)).
            "compute.num_workers=2", f"compute.cpus_per_worker={NODE_CPUS * 0.75}",
        ],
    )  # fmt: skip
    unit = Unit(1, "bp4d", 1)
    result = run_unit(cfg, unit, None)
    assert sorted({a["Address"]["NodeID"] for a in train_workers()}) == sorted(two_nodes)
    meta = read_meta(Path(result.checkpoint))
    assert (meta["epoch"], meta["step"]) == (0, STEPS)
    losses = {k: v for k, v in result.metrics.items() if k.startswith("train_")}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    model = build_model(cfg.model, cfg.stage2.logit_scale_init, cfg.stage2.logit_scale_max)
    load_weights(Path(result.checkpoint), model)  # strict: every tensor, every shape
    stored = stored_unit_dir(cfg, unit, result.key)
    assert stored is not None and "checkpoint/model.pt" in stored.files()
