"""Checkpoints named by MLflow (`models:/NAME/VERSION`, `models:/NAME@ALIAS`, `runs:/ID/model`,
or a registered name alone), fetched once into a local cache.

The cache is keyed by the tracking server (and its registry) and by the version a name
resolves to: `models:/clef-bp4d/1` of one server is another model than the same URI of
another server, and a registered name's new version is another download (issue #31: the URI
alone was the key, so the first server's model was used for every server). A pinned version
(`models:/NAME/3`, `runs:/ID/...`) is found in the cache without asking the server, so a
cached model still loads offline.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from clef_core.common.errors import ClefError

SCHEMES = ("models:/", "runs:/")


def resolve_model_dir(uri: str, tracking_uri: str | None, cache: Path) -> Path:
    """A local checkpoint folder for `uri` (downloaded from MLflow when it is not local)."""
    path = Path(uri).expanduser()
    if path.is_dir():
        return path
    if "/" in uri and not uri.startswith(SCHEMES):  # a path, not a model name
        raise ClefError(
            f"model {uri!r}: no such checkpoint folder (expected model.pt and meta.json in it)"
        )
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri)
    registry = getattr(client, "_registry_uri", None) or client.tracking_uri
    try:
        uri = pinned(uri, client)
    except MlflowException as err:  # no such alias or stage, registry unreachable
        raise ClefError(f"cannot resolve model {uri} at {registry}: {err}") from None
    target = cache / store_key(client.tracking_uri, registry) / model_key(uri)
    for folder in (target, target / "model"):  # a run's root holds the checkpoint in model/
        if (folder / "meta.json").is_file():
            return folder
    try:
        local = _download_whole(uri, client, target)
    except (MlflowException, OSError) as err:  # no such model or version, store unreachable
        raise ClefError(f"cannot fetch model {uri} from {client.tracking_uri}: {err}") from None
    return local if (local / "meta.json").is_file() else local / "model"


def _download_whole(uri: str, client: Any, target: Path) -> Path:
    """`_download` into a temporary sibling renamed to `target` when complete: a download cut
    short (Ctrl-C, a network error) is never taken for a cached model, and of two processes
    fetching the same model the second to finish keeps the first one's copy."""
    import os
    import shutil

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        local = _download(uri, client, tmp)
        shutil.rmtree(target, ignore_errors=True)  # a copy cut short by an older version
        try:
            os.replace(tmp, target)
        except OSError:  # another process renamed its whole copy there first
            if not any((f / "meta.json").is_file() for f in (target, target / "model")):
                raise
        return target / local.relative_to(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download(uri: str, client: Any, target: Path) -> Path:
    """`uri` (pinned) downloaded under `target`. A models:/ URI is turned into its version's
    source here, through `client`: MLflow's own models:/ download asks the process-wide
    registry, whatever registry it is given (mlflow 3.17, `ModelsArtifactRepository`), so
    `--mlflow-uri` would fetch another server's model. The tracking URI is passed, never set
    for the whole process."""
    import mlflow

    if uri.startswith("models:/"):
        name, _, version = uri.removeprefix("models:/").rpartition("/")
        uri = client.get_model_version_download_uri(name, version)
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(target), tracking_uri=client.tracking_uri
        )
    )


def pinned(uri: str, client: Any) -> str:
    """`uri` naming one version for good: a registered name alone, `models:/NAME@ALIAS`,
    `models:/NAME/latest` and `models:/NAME/<stage>` become `models:/NAME/<number>` (their
    target moves when a version is added, so the number is the cache's key)."""
    if uri.startswith("runs:/"):
        return uri
    if not uri.startswith("models:/"):  # a registered name: its latest version
        versions = client.search_model_versions(f"name = '{uri}'")
        if not versions:
            raise ClefError(
                f"model {uri!r}: not a checkpoint folder, an MLflow URI (models:/NAME/VERSION, "
                f"runs:/ID/model) or a registered model name at {client.tracking_uri}"
            )
        return f"models:/{uri}/{max(int(v.version) for v in versions)}"
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return f"models:/{name}/{client.get_model_version_by_alias(name, alias).version}"
    name, _, ref = rest.rpartition("/")
    if ref.isdigit():
        return uri
    if ref.lower() == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
    else:  # a stage (Production, Staging: MLflow's older scheme)
        versions = client.get_latest_versions(name, [ref])
    if not versions:
        raise ClefError(f"model {uri}: no version of {name!r} is {ref} at {client.tracking_uri}")
    return f"models:/{name}/{max(int(v.version) for v in versions)}"


def store_key(tracking_uri: str, registry_uri: str) -> str:
    """A cache folder name for one tracking server and its registry: the server's host (or
    the store's kind) to read, and a hash of both URIs, local stores made absolute (a
    relative `sqlite:///mlflow.db` is another store in another folder). No credentials:
    a URI's user and password never reach a folder name."""
    both = "\n".join(_absolute(u) for u in (tracking_uri, registry_uri))
    parts = urlparse(tracking_uri)
    host = f"{parts.hostname}-{parts.port}" if parts.hostname else parts.scheme or "file"
    return f"{_slug(host)}-{hashlib.sha256(both.encode()).hexdigest()[:16]}"


def model_key(uri: str) -> str:
    """A cache folder name for one pinned model URI: readable, and a hash of the exact URI,
    since names that differ only in characters a folder name drops (`clef bp4d`,
    `clef_bp4d`) read alike and would share one folder, the first one fetched served for
    both."""
    return f"{_slug(uri)}-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"


def _absolute(uri: str) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    if uri.startswith("file:") and not uri.startswith("file:/"):
        return "file:" + str(Path(uri.removeprefix("file:")).resolve())
    if "://" not in uri and not uri.startswith("file:"):  # a plain path
        return str(Path(uri).resolve())
    return uri


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", text).strip("_") or "_"
