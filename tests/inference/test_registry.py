"""The registry model cache against two real MLflow stores (SQLite, artifacts in folders)
that both register `clef-bp4d` with different weights (issue #31: the cache was keyed by
the URI alone, so the second server got the first server's model): each server's model
comes back, as does each of two names that read alike in a folder name, a new version and
an alias are new downloads, and a pinned version comes from the cache without its server."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from clef_core.common.errors import ClefError
from clef_core.inference.registry import resolve_model_dir, store_key

NAME = "clef-bp4d"


def _checkpoint(folder: Path, value: float) -> Path:
    """A checkpoint folder whose weights are all `value` (what tells the models apart)."""
    folder.mkdir(parents=True)
    torch.save({"w": torch.full((4,), value)}, folder / "model.pt")
    (folder / "meta.json").write_text(json.dumps({"value": value}))
    return folder


def _register(store: Path, value: float, alias: str | None = None, name: str = NAME) -> str:
    """A run in the SQLite store at `store` logging a checkpoint of `value` as its model,
    registered as a new version of `name`; returns the store's tracking URI."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("clef")
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment("clef", artifact_location=(store / "artifacts").as_uri())
    )
    run = client.create_run(experiment_id)
    client.log_artifacts(run.info.run_id, str(_checkpoint(store / f"ckpt{value}", value)), "model")
    client.set_terminated(run.info.run_id)
    with contextlib.suppress(MlflowException):  # registered already: a new version
        client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return uri


def _weights(folder: Path) -> float:
    return float(torch.load(folder / "model.pt")["w"][0])


def test_the_same_name_on_two_servers_is_two_models(tmp_path: Path) -> None:
    first = _register(tmp_path / "first", 1.0)
    second = _register(tmp_path / "second", 2.0)
    cache = tmp_path / "cache"
    a = resolve_model_dir(f"models:/{NAME}/1", first, cache)
    b = resolve_model_dir(f"models:/{NAME}/1", second, cache)
    assert (_weights(a), _weights(b)) == (1.0, 2.0)
    assert a.is_relative_to(cache) and b.is_relative_to(cache) and a != b
    # the registered name alone: the latest version, of the server asked
    assert _weights(resolve_model_dir(NAME, second, cache)) == 2.0
    from mlflow import MlflowClient

    run_id = MlflowClient(second).get_model_version(NAME, "1").run_id
    assert _weights(resolve_model_dir(f"runs:/{run_id}/model", second, cache)) == 2.0


def test_names_that_read_alike_in_a_folder_name_are_two_models(tmp_path: Path) -> None:
    """`clef bp4d` and `clef_bp4d` are both `clef_bp4d` once made a folder name: the cache
    keeps them apart (it once served the first one fetched for both)."""
    uri = _register(tmp_path / "store", 1.0, name="clef bp4d")
    _register(tmp_path / "store", 2.0, name="clef_bp4d")
    cache = tmp_path / "cache"
    assert _weights(resolve_model_dir("models:/clef bp4d/1", uri, cache)) == 1.0
    assert _weights(resolve_model_dir("models:/clef_bp4d/1", uri, cache)) == 2.0


def test_a_new_version_and_an_alias_are_fetched_anew(tmp_path: Path) -> None:
    store = tmp_path / "store"
    uri = _register(store, 1.0)
    cache = tmp_path / "cache"
    assert _weights(resolve_model_dir(NAME, uri, cache)) == 1.0
    _register(store, 3.0, alias="champion")  # version 2
    assert _weights(resolve_model_dir(NAME, uri, cache)) == 3.0
    assert _weights(resolve_model_dir(f"models:/{NAME}/latest", uri, cache)) == 3.0
    assert _weights(resolve_model_dir(f"models:/{NAME}@champion", uri, cache)) == 3.0
    assert _weights(resolve_model_dir(f"models:/{NAME}/1", uri, cache)) == 1.0
    with pytest.raises(ClefError, match="cannot resolve model"):
        resolve_model_dir(f"models:/{NAME}@nobody", uri, cache)


def test_a_pinned_version_loads_from_the_cache_without_its_server(tmp_path: Path) -> None:
    uri = _register(tmp_path / "store", 1.0)
    cache = tmp_path / "cache"
    fetched = resolve_model_dir(f"models:/{NAME}/1", uri, cache)
    (tmp_path / "store" / "mlflow.db").unlink()  # the server is gone
    assert resolve_model_dir(f"models:/{NAME}/1", uri, cache) == fetched


def test_the_cache_key_is_the_server_never_its_credentials(tmp_path: Path) -> None:
    key = store_key("https://alice:s3cret@mlflow.example.org:5000", "https://mlflow.example.org")
    assert key.startswith("mlflow.example.org-5000-") and "s3cret" not in key
    assert store_key("https://a.example.org", "https://a.example.org") != store_key(
        "https://b.example.org", "https://b.example.org"
    )


def test_a_download_lands_whole_and_a_cut_copy_is_fetched_again(tmp_path: Path) -> None:
    """Downloads go to a temporary sibling renamed into place when complete (nothing of it
    is left beside the cache); a copy without its meta.json (cut short by an older version)
    is fetched again, not loaded."""
    uri = _register(tmp_path / "store", 1.0)
    cache = tmp_path / "cache"
    fetched = resolve_model_dir(f"models:/{NAME}/1", uri, cache)
    assert not [p for p in fetched.parent.parent.rglob("*.tmp")]
    (fetched / "meta.json").unlink()
    (fetched / "model.pt").write_bytes(b"cut")
    again = resolve_model_dir(f"models:/{NAME}/1", uri, cache)
    assert again == fetched and _weights(again) == 1.0
    assert not [p for p in fetched.parent.parent.rglob("*.tmp")]
