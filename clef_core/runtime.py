"""Process-wide set-up every entry point needs: service environment and torchvision on CPU torch.

Both run at the import of the project's packages, so Ray workers and Prefect task runs (which
import our modules to unpickle our functions) get them too, not only the CLI.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
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
# the sockets). Such an instance is reachable from this machine only, so it runs without
# Ray's token authentication (ours); a cluster you start yourself keeps Ray's own setting.
LOOPBACK_RAY_ENV: dict[str, str] = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
}


def default_data_dir() -> Path:
    """The data directory: $CLEF_DATA_DIR, else ./data."""
    return Path(os.environ.get("CLEF_DATA_DIR", "data")).resolve()


def configure_environment() -> None:
    """Set the service environment (cheap; runs at package import)."""
    import logging

    for key, value in SERVICE_ENV.items():
        os.environ.setdefault(key, value)
    # MLflow announces creating and migrating a SQLite store at INFO on every new store.
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def use_data_dir(data_dir: Path) -> Path:
    """Keep Prefect's home and the default MLflow store under the data dir; return it resolved.

    Called by entry points once they know the data dir. A user's own PREFECT_HOME or
    MLFLOW_TRACKING_URI wins. MLflow's built-in default moves with the working directory.
    """
    root = data_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    os.environ["CLEF_DATA_DIR"] = str(root)
    return root


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


def _define_torchvision_ops() -> None:
    """Define torchvision's operator schemas when its compiled ops cannot load.

    The registry's torchvision wheel is a CUDA build; with the CPU torch its `_C.so` fails to
    load and `import torchvision` then dies on `torchvision::nms`. With the schemas defined the
    pure-Python parts (transforms, models) work; `torchvision.ops`/`io` stay unavailable, and
    we use neither. On a CUDA torch the real ops load and this does nothing.
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


class _TorchvisionFix(importlib.abc.MetaPathFinder):
    """Runs the fix just before the first `import torchvision`, so importing us stays cheap."""

    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            _define_torchvision_ops()
        return None  # let the normal finders import it


def install_torchvision_fix() -> None:
    """Install the import hook once (or apply the fix now if torchvision is already loading)."""
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(f, _TorchvisionFix) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionFix())


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
