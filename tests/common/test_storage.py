"""Storage locations (clef_core.common.storage): an object store that cannot be reached is one
StorageError naming the URI (not pyarrow's OSError traceback), without the URI's options or
credentials; a local disk's errors stay OSErrors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from clef_core.common.errors import ClefError
from clef_core.common.storage import StorageError, location
from tests.s3server import ENV


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
