"""`clef_core.common.storage` without a server: a local path and an fsspec-only filesystem
(`memory://`, which pyarrow has no filesystem for) give the same Location operations; the
config keeps the data dir local and puts shards and results where it is told; an object store
that cannot be reached is one StorageError naming the URI (not pyarrow's OSError), without the
URI's options; a local disk's errors stay OSErrors. The S3 round trip against a real server is
`tests/training/test_object_storage.py`."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from clef_core.common.errors import ClefError, ConfigError
from clef_core.common.storage import StorageError, local_copy, location, upload_shards
from clef_core.method.config import load_config
from tests.s3server import ENV


@pytest.mark.parametrize("kind", ["local", "fsspec"])
def test_location_reads_writes_and_copies_folders(kind: str, tmp_path: Path) -> None:
    root = location(tmp_path / "store") if kind == "local" else location("memory://clef-test")
    assert (root.local is not None) == (kind == "local")
    assert not (root / "a.txt").exists() and root.files() == []
    (root / "sub" / "a.txt").write_text("hello")
    assert (root / "sub" / "a.txt").is_file() and (root / "sub" / "a.txt").size() == 5
    assert (root / "sub" / "a.txt").read_text() == "hello"
    assert str(root / "sub") == f"{root.uri}/sub" and (root / "sub").parent == root

    folder = tmp_path / "up"
    (folder / "dataset").mkdir(parents=True)
    (folder / "dataset" / "x.parquet").write_bytes(b"shard")
    (folder / "dataset" / "manifest.json").write_text("{}")
    (folder / "dataset" / ".x.parquet.1.tmp").write_bytes(b"half")  # never copied
    upload_shards(folder / "dataset", root / "shards")
    assert (root / "shards").files() == ["manifest.json", "x.parquet"]
    with local_copy(root / "shards") as copy:
        assert (copy / "x.parquet").read_bytes() == b"shard"
    (root / "shards").delete()
    assert (root / "shards").files() == []


def test_config_keeps_the_data_dir_local(tmp_path: Path) -> None:
    cfg = load_config("cpu-tiny", [f"data.data_dir={tmp_path}"])
    assert cfg.data.shard_dir.local == tmp_path / "shards"  # the defaults, as before
    assert cfg.data.storage_dir.local == tmp_path
    moved = load_config("cpu-tiny", ["data.shards=memory://b/shards", "data.storage=memory://b"])
    assert moved.data.shard_dir.local is None and moved.data.shard_dir.uri == "memory://b/shards"
    with pytest.raises(ConfigError, match=r"data\.shards=<URI>/shards"):
        load_config("cpu-tiny", ["data.data_dir=s3://bucket/clef"])


def test_a_uri_data_dir_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    from clef_core.common.runtime import use_data_dir

    with pytest.raises(ConfigError, match="this machine's folder"):
        use_data_dir(Path("s3://bucket/clef"))  # what typer makes of --data-dir s3://...
    assert not Path("s3:").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_object_store_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    shards = location(f"s3://clef-nowhere/shards?endpoint_override={endpoint}")
    with pytest.raises(StorageError) as caught:
        shards.files()
    message = str(caught.value)
    assert isinstance(caught.value, ClefError)
    assert message.startswith("s3://clef-nowhere/shards: cannot reach or read it")
    assert "endpoint_override" in message  # the advice names the setting...
    assert f"={endpoint}" not in message  # ...but not the URI's own options
    with pytest.raises(StorageError):
        (shards / "bp4d" / "manifest.json").read_text()


def test_local_errors_stay_os_errors(tmp_path: Path) -> None:
    missing = location(tmp_path / "none")
    assert not missing.exists() and missing.files() == []
    with pytest.raises(FileNotFoundError):
        missing.read_bytes()
