"""Process set-up, done by entry points only: importing a project module changes no
environment variable, logger, thread count, import hook or tracking URI.

- `configure_process()`: the service environment (Ray, Prefect, MLflow switches) and quieter
  MLflow loggers. Called by the CLI's `main`, the `clef` flow's start, the Ray Train worker's
  set-up (`ray_train.train_loop`), the tests' conftest and the bench scripts.
- `use_data_dir(dir)`: Prefect's home under the data dir, once an entry point knows it.
- `prepare_torchvision()`: the one fix a module needs before it imports open_clip (CPU torch
  with the registry's CUDA torchvision); called by those modules, it sets nothing else.
- `init_ray(address)`: a cluster, or a local instance on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

# Environment the services need; `setdefault` so a user's own value always wins.
# Ray's token authentication is deliberately not touched here: a cluster that has it on must
# see it on in every driver and client too (see LOOPBACK_RAY_ENV for our own instances).
SERVICE_ENV: dict[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The temporary Prefect server's 20 s start timeout is missed on a busy 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.3",
    # Ray 2.60's new parquet path (ListFiles -> ReadFiles) took 8.5 s per pass over 48 small
    # shards on 2 cores, the previous one 0.7 s: every epoch starts a pass (bench/train_speed.py).
    "RAY_DATA_USE_DATASOURCE_V2": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


# The Ray instances this project starts itself (`init_ray` without an address, `clef stack
# up`'s head) are single-node and listen on 127.0.0.1 only. On Linux Ray replaces a loopback
# `--node-ip-address` by the machine's address and then binds its GCS, raylet, workers and
# agents to every interface; its single-node mode (the one Ray uses on macOS and Windows)
# keeps the node address, and so every port, on 127.0.0.1 (tests/test_end_to_end.py lists
# the sockets). The local instance `init_ray` starts lives as long as its own process and
# runs without Ray's token authentication (ours); the stack's head, which any account of this
# machine could reach for as long as the stack runs, turns it on with the stack's secret
# (`flows.stack_auth`); a cluster you start yourself keeps Ray's own setting.
LOOPBACK_RAY_ENV: dict[str, str] = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
}

# Ray Train on one machine (ours; a user's own values win): no preemption watcher, which is one
# more actor process per unit for a node that cannot be preempted apart from its driver, and
# the controller polls its workers every 0.5 s, not 2 s, so a unit's end is seen sooner. On 2
# cores the two took a 2-unit `clef finetune` of 2 steps a unit from 79-89 s to 71-80 s.
SINGLE_NODE_TRAIN_ENV: dict[str, str] = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}


def default_data_dir() -> Path:
    """The data directory: $CLEF_DATA_DIR, else ./data."""
    return Path(os.environ.get("CLEF_DATA_DIR", "data")).resolve()


def configure_process() -> None:
    """Set the service environment (a user's own values win) and quiet MLflow's store
    loggers. Cheap and idempotent; entry points call it before they start any service."""
    import logging

    for key, value in SERVICE_ENV.items():
        os.environ.setdefault(key, value)
    # MLflow announces creating and migrating a SQLite store at INFO on every new store.
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def data_root(data_dir: Path) -> Path:
    """The data dir resolved, or ConfigError for a URI given as one; touches nothing."""
    from clef_core.common.errors import ConfigError
    from clef_core.common.storage import has_scheme

    if has_scheme(str(data_dir)):  # `--data-dir s3://...`: Path() made it `s3:/...`
        raise ConfigError(
            f"--data-dir is this machine's folder, got {data_dir} (a URI): put the shards and "
            "results in object storage with --set data.shards=<URI>/shards "
            "--set data.storage=<URI>"
        )
    return data_dir.resolve()


def use_data_dir(data_dir: Path) -> Path:
    """Create the data dir and keep Prefect's home under it; return it resolved.

    Called by entry points once they know the data dir. A user's own PREFECT_HOME wins.
    The MLflow store is not set here (for the whole process): each caller passes
    `default_tracking_uri(data_dir)` or its own URI explicitly.
    """
    root = data_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    os.environ["CLEF_DATA_DIR"] = str(root)
    return root


def default_tracking_uri(data_dir: Path) -> str:
    """$MLFLOW_TRACKING_URI when set, else the SQLite store in `data_dir` (the one default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir.resolve() / 'mlflow.db'}"


def _cuda_of_installed_torchvision() -> str | None:
    """The CUDA tag of the installed torchvision build (`+cu130` -> "130"), without importing it."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return None
    version_py = Path(spec.origin).with_name("version.py")
    try:
        match = re.search(r"^__version__\s*=\s*'[^'+]*\+cu(\d+)'", version_py.read_text(), re.M)
    except OSError:
        return None
    return match.group(1) if match else None


def prepare_torchvision() -> None:
    """Define torchvision's operator schemas when its compiled ops cannot load (idempotent).

    The registry's torchvision wheel is a CUDA build; with the CPU torch its `_C.so` fails to
    load and `import torchvision` then dies on `torchvision::nms`. With the schemas defined the
    pure-Python parts (transforms, models) work; `torchvision.ops`/`io` stay unavailable, and
    we use neither. On a CUDA torch the real ops load and this does nothing. Called by the
    modules that import open_clip (which imports torchvision), just before they do.
    """
    import torch

    if torch.version.cuda is not None or _cuda_of_installed_torchvision() is None:
        return
    if hasattr(torch.ops.torchvision, "nms"):
        return
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARIES.append(lib)  # a Library unregisters its schemas when collected


_LIBRARIES: list[object] = []


def datasource_v2() -> bool:
    """Whether Ray Data reads Parquet through its V2 datasource: $RAY_DATA_USE_DATASOURCE_V2
    read as Ray reads it ("1" or "true", any case), else our default (SERVICE_ENV: V1). The
    one parsing for the driver's start (`init_ray`) and each plan (`data.load_split`)."""
    value = os.environ.get("RAY_DATA_USE_DATASOURCE_V2", SERVICE_ENV["RAY_DATA_USE_DATASOURCE_V2"])
    return value.strip().lower() in ("1", "true")


def local_cpus() -> int:
    """Logical CPUs of a local Ray instance."""
    return max(4, 2 * (os.cpu_count() or 1))


def init_ray(address: str | None) -> bool:
    """Connect to the Ray cluster at `address`, or start a local instance bound to 127.0.0.1.

    Returns True when this call started Ray (the caller then shuts it down).
    """
    import logging

    import ray

    # Ray Data logs every operator's progress at INFO in the driver: our own progress
    # display covers it, and warnings still show.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # Ray Data reads RAY_DATA_USE_DATASOURCE_V2 once, when `ray.data` is first imported,
    # which in a flow run or a test may precede `configure_process`: the driver's context
    # (which the datasets carry to Ray's workers) takes the variable's value now (SERVICE_ENV).
    from ray.data import DataContext

    DataContext.get_current().use_datasource_v2 = datasource_v2()
    if ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):  # `ray job submit` sets RAY_ADDRESS
        ray.init(address=address, log_to_driver=False)
    else:
        _confine_to_loopback()
        # Twice as many logical CPUs as cores: training workers wait on data, and with one
        # logical CPU per core Ray Data's decode tasks starve behind them (STACK.md).
        ray.init(num_cpus=local_cpus(), include_dashboard=False, log_to_driver=False)
    return True


def _confine_to_loopback() -> None:
    """Single-node mode for the local instance this process is about to start.

    The processes Ray starts read the variables at their import; this process imported Ray
    already, so its own copy of the flag is set too (read at call time by Ray 2.60's
    `services.get_node_ip_address`).
    """
    from ray._private import ray_constants

    for key, value in LOOPBACK_RAY_ENV.items():  # a user's own RAY_AUTH_MODE=token wins
        os.environ[key] = value if key != "RAY_AUTH_MODE" else os.environ.get(key, value)
    ray_constants.ENABLE_RAY_CLUSTER = False
    for key, value in SINGLE_NODE_TRAIN_ENV.items():
        os.environ.setdefault(key, value)
