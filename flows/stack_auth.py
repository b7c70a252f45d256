"""The local stack's secret, and how each service and client of the stack uses it.

Loopback binding keeps other machines out, not the other accounts of this one (a shared GPU
server, a lab workstation, a CI runner): without a secret any of them could run commands
as the stack's owner through Ray's job API or Prefect's. So `clef stack up` makes one random
secret, `<data_dir>/stack/secret` (created with mode 0600, never widened), and every service
requires it:

- Ray: its token authentication (`RAY_AUTH_MODE=token`, the token read from the file through
  `RAY_AUTH_TOKEN_PATH`) on the dashboard, the job API, the GCS and the client server;
- Prefect: its server's basic auth, user `clef` (`PREFECT_SERVER_API_AUTH_STRING`; clients
  send `PREFECT_API_AUTH_STRING`), and CORS limited to its own UI's origin;
- MLflow: its basic-auth app, admin `clef` (clients send `MLFLOW_TRACKING_USERNAME` and
  `MLFLOW_TRACKING_PASSWORD`; the browser asks for them), CORS limited to its UI's origin.

The secret is kept across `up`s; delete the file (stack down) for a new one. Health checks
that services leave open (Prefect's `/api/health`, MLflow's `/health`) need no secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shlex
import stat
from pathlib import Path

from clef_core.common.errors import ClefError
from flows.ports import HOST, Ports

USER = "clef"  # the one account of the Prefect and MLflow servers


def secret_path(data_dir: Path) -> Path:
    return data_dir / "stack" / "secret"


def mlflow_auth_db(data_dir: Path) -> Path:
    """MLflow's user store (its admin's password hash), beside its tracking store."""
    return data_dir / "mlflow-auth.db"


def make_secret(data_dir: Path) -> str:
    """The stack's secret: the existing file's (checked), else a new one in a file created
    with mode 0600 (O_EXCL: never an existing file, never through a link). A new secret also
    drops MLflow's user store, whose admin password would otherwise stay the old one (MLflow
    sets it only when it creates the admin)."""
    path = secret_path(data_dir)
    if path.exists() or path.is_symlink():
        return read_secret(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value)
    mlflow_auth_db(data_dir).unlink(missing_ok=True)
    return value


def read_secret(data_dir: Path) -> str:
    """The secret of the stack of `data_dir`; refused unless it is a plain file of this user
    that no one else can read."""
    path = secret_path(data_dir)
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise ClefError(f"no stack secret at {path}: `clef stack up` first") from None
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        raise ClefError(f"{path} is not a file of yours: expected the stack's secret")
    if info.st_mode & 0o077:
        raise ClefError(
            f"{path} can be read by others (mode {stat.S_IMODE(info.st_mode):o}); expected 600: "
            "delete it and run `clef stack up` again for a new secret"
        )
    value = path.read_text().strip()
    if not value:
        raise ClefError(f"{path} is empty: delete it and run `clef stack up` again")
    return value


def ui_origins(port: int) -> str:
    """The origins a service's own UI is served from (the only ones CORS allows)."""
    return f"http://{HOST}:{port},http://localhost:{port}"


def server_env(name: str, data_dir: Path, ports: Ports, secret: str) -> dict[str, str]:
    """What the service `name` of the stack needs in its environment to require the secret."""
    ray = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(secret_path(data_dir))}
    if name == "prefect":
        return {
            "PREFECT_SERVER_API_AUTH_STRING": f"{USER}:{secret}",
            "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": ui_origins(ports.prefect),
        }
    if name == "mlflow":
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(_mlflow_auth_config(data_dir)),
            "MLFLOW_AUTH_ADMIN_USERNAME": USER,
            "MLFLOW_AUTH_ADMIN_PASSWORD": secret,
            # Signs the auth app's CSRF tokens; derived, so every worker has the same one.
            "MLFLOW_FLASK_SERVER_SECRET_KEY": hmac.new(
                secret.encode(), b"mlflow-flask", hashlib.sha256
            ).hexdigest(),
        }
    if name == "ray":
        # The raylet's environment is every worker's and job driver's: the stack's MLflow
        # credentials go there, so a job or a training worker logging to it is let in.
        return {**ray, **_mlflow_client(secret)}
    return {}


def mlflow_args(ports: Ports) -> list[str]:
    """`mlflow server` options: the basic-auth app, CORS for its own UI only, one worker.

    One worker: with more, uvicorn's supervisor kills each worker that does not answer its
    health ping within 5 s, and on a loaded 2-core machine the basic-auth app's workers took
    longer than that to start, again and again (the server never came up in 180 s). One
    process serves one user's UI and runs well (requests run in its thread pool)."""
    return [
        "--app-name", "basic-auth", "--cors-allowed-origins", ui_origins(ports.mlflow),
        "--workers", "1",
    ]  # fmt: skip


def _mlflow_auth_config(data_dir: Path) -> Path:
    """MLflow's auth config (no secret in it: the password comes from the environment):
    its user store under the data dir, and no access for any user but the admin."""
    path = data_dir / "stack" / "mlflow-auth.ini"
    path.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{mlflow_auth_db(data_dir)}\n"
        f"admin_username = {USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Without the cache every request re-hashes the password (PBKDF2): a UI page's dozens
        # of requests queue on a busy 2-core machine. One user whose password never changes
        # while the server runs: nothing can go stale.
        "auth_cache_ttl_seconds = 600\n"
    )
    return path


def _mlflow_client(secret: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": secret}


def client_env(data_dir: Path, secret: str) -> dict[str, str]:
    """What a client of the stack (a flow run, a `clef` command, `prefect`, `ray job submit`)
    needs in its environment to be let in."""
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(secret_path(data_dir)),
        "PREFECT_API_AUTH_STRING": f"{USER}:{secret}",
        **_mlflow_client(secret),
    }


def shell_exports(data_dir: Path) -> dict[str, str]:
    """`client_env` as shell words for `clef stack env`: the secret is read from its file
    when the line is evaluated, so it is never printed (terminals, CI logs)."""
    path = secret_path(data_dir)
    read = f"$(cat {shlex.quote(str(path))})"
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": shlex.quote(str(path)),
        "PREFECT_API_AUTH_STRING": f'"{USER}:{read}"',
        "MLFLOW_TRACKING_USERNAME": USER,
        "MLFLOW_TRACKING_PASSWORD": f'"{read}"',
    }


def service_env(data_dir: Path, ports: Ports) -> dict[str, str]:
    """Where the stack's services are: its Prefect API, MLflow server and Ray head."""
    return {
        "PREFECT_API_URL": f"http://{HOST}:{ports.prefect}/api",
        "PREFECT_HOME": str(data_dir / "prefect"),
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{ports.mlflow}",
        "RAY_ADDRESS": f"{HOST}:{ports.ray}",
        "CLEF_DATA_DIR": str(data_dir),
    }


def user_env(data_dir: Path, ports: Ports) -> dict[str, str]:
    """What a shell needs for the documented commands against this stack, as shell words
    (`clef stack env`): where the services are and how to be let in."""
    data_dir = data_dir.resolve()
    where = {k: shlex.quote(v) for k, v in service_env(data_dir, ports).items()}
    # `ray job submit` / `clef submit` talk to the dashboard's job API, not to the GCS.
    where["RAY_API_SERVER_ADDRESS"] = f"http://{HOST}:{ports.ray_dashboard}"
    # A driver of the head's single-node mode must be in it too: otherwise it takes the
    # machine's address for its own and finds no raylet there (`LOOPBACK_RAY_ENV`).
    where["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return {**where, **shell_exports(data_dir)}


def auth_headers(name: str, secret: str) -> dict[str, str]:
    """HTTP headers that let a request into the service `name` of the stack."""
    if name == "ray":
        return {"Authorization": f"Bearer {secret}"}
    basic = base64.b64encode(f"{USER}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {basic}"}
