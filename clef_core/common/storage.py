"""Where shards and results live: a local path or a URI of any filesystem pyarrow opens
(`s3://`, `gs://`, `abfs://`, `hdfs://`, `file://`) or, failing that, fsspec (its other
protocols, wrapped for pyarrow). docs/stack.md.

A `Location` is a (filesystem, path) pair with the few Path-like operations the training side
needs, so the same code reads `data/shards` and `s3://bucket/clef/shards`. Credentials and the
endpoint come from the filesystem's own standard settings (for S3: `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` for a non-AWS server, or an
instance role), or from the URI's query (`s3://bucket/x?endpoint_override=http://host:9000`):
nothing of ours to configure, and every Ray node resolves the same URI the same way.

Writes are whole-object on object stores (an object appears complete or not at all); on a
local disk `write_bytes` writes a temporary name and renames it, as before.
"""

from __future__ import annotations

import functools
import os
import posixpath
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from clef_core.common.errors import ClefError

_P = ParamSpec("_P")
_R = TypeVar("_R")


class StorageError(ClefError):
    """A remote filesystem that cannot be reached or read: a setting of the user's (endpoint,
    credentials, bucket), not a bug, so one line instead of pyarrow's traceback."""


def _unreachable(uri: str, err: OSError) -> StorageError:
    return StorageError(
        f"{uri}: cannot reach or read it ({err}); expected a reachable object store: check "
        "the endpoint (AWS_ENDPOINT_URL or ?endpoint_override=), the credentials and the bucket"
    )


def _says_where(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """A remote filesystem's OSError (network, credentials, missing bucket) as a StorageError
    naming the URI; a local disk's OSError stays as it is (it names its path already)."""

    @functools.wraps(method)
    def wrapped(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except OSError as err:
            loc = args[0]
            if not isinstance(loc, Location) or loc.local is not None:
                raise
            raise _unreachable(loc.uri, err) from err

    return wrapped


@dataclass(frozen=True)
class Location:
    """A file or folder on `fs` at `path` (the filesystem's own path: `bucket/key` for S3, an
    absolute path for the local disk); `uri` is how messages name it."""

    fs: Any  # pyarrow.fs.FileSystem (pyarrow is untyped here)
    path: str
    uri: str
    query: str = ""  # the URI's options (`endpoint_override=...`), kept out of messages

    def __truediv__(self, name: str) -> Location:
        path, uri = posixpath.join(self.path, name), posixpath.join(self.uri, name)
        return Location(self.fs, path, uri, self.query)

    def __str__(self) -> str:
        return self.uri

    @property
    def full_uri(self) -> str:
        """The URI with its options: what `location` turns into this Location again (on
        another process or node)."""
        return f"{self.uri}?{self.query}" if self.query else self.uri

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def local(self) -> Path | None:
        """The path on this machine's disk, or None for a remote filesystem."""
        return Path(self.path) if isinstance(self.fs, pafs.LocalFileSystem) else None

    @property
    def parent(self) -> Location:
        path, uri = posixpath.dirname(self.path), posixpath.dirname(self.uri)
        return Location(self.fs, path, uri, self.query)

    @_says_where
    def _info(self) -> Any:
        return self.fs.get_file_info(self.path)

    def is_file(self) -> bool:
        return bool(self._info().type == pafs.FileType.File)

    def exists(self) -> bool:
        return bool(self._info().type != pafs.FileType.NotFound)

    def size(self) -> int:
        return int(self._info().size)

    @_says_where
    def read_bytes(self) -> bytes:
        with self.fs.open_input_file(self.path) as f:
            return bytes(f.read())

    def read_text(self) -> str:
        return self.read_bytes().decode()

    @_says_where
    def open(self) -> Any:
        """A random-access file (what `pq.ParquetFile` and `np.load` read)."""
        return self.fs.open_input_file(self.path)

    @_says_where
    def write_bytes(self, data: bytes) -> None:
        """Whole or not at all: an object store's PUT is; on a disk, a rename is."""
        self.fs.create_dir(posixpath.dirname(self.path), recursive=True)
        if self.local is None:
            with self.fs.open_output_stream(self.path) as f:
                f.write(data)
            return
        tmp = self.local.with_name(f".{self.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(self.local)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    @_says_where
    def files(self) -> list[str]:
        """Paths (relative to this folder) of every file under it; [] when there is none."""
        if self._info().type != pafs.FileType.Directory:
            return []
        found = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True))
        return sorted(
            posixpath.relpath(i.path, self.path) for i in found if i.type == pafs.FileType.File
        )

    @_says_where
    def delete(self) -> None:
        """Remove this folder and everything under it (nothing when there is none)."""
        if self._info().type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path)

    @_says_where
    def put(self, folder: Path, skip: tuple[str, ...] = (), changed_only: bool = False) -> None:
        """Copy the local `folder`'s files here (names in `skip` left out; with `changed_only`,
        files already here at the same size too: shards are written once, never edited)."""
        for f in sorted(folder.rglob("*")):
            rel = f.relative_to(folder).as_posix()
            if not f.is_file() or rel in skip or f.name.startswith("."):  # .tmp files
                continue
            info = self.fs.get_file_info((self / rel).path) if changed_only else None
            if info is None or info.size != f.stat().st_size:
                self._copy(str(f), pafs.LocalFileSystem(), (self / rel).path, self.fs)

    @_says_where
    def get(self, folder: Path, skip: tuple[str, ...] = ()) -> None:
        """Copy this folder's files into the local `folder` (names in `skip` left out)."""
        for rel in self.files():
            if rel not in skip:
                target = str(folder / rel)  # `_copy` makes its folder
                self._copy((self / rel).path, self.fs, target, pafs.LocalFileSystem())

    @staticmethod
    def _copy(source: str, source_fs: Any, target: str, target_fs: Any) -> None:
        """One file, streamed in chunks (a checkpoint can be gigabytes); an object store's
        upload completes at the end, so the object appears whole."""
        target_fs.create_dir(posixpath.dirname(target), recursive=True)
        pafs.copy_files(source, target, source_fs, target_fs)


Where = str | os.PathLike[str] | Location  # what the functions taking a location accept


def has_scheme(where: str) -> bool:
    """A URI (`s3://...`), not a local path (a Windows drive letter is no scheme)."""
    return len(urlsplit(where).scheme) > 1


def location(where: Where) -> Location:
    """`where` (a local path or a URI) as a Location; a local path is made absolute."""
    if isinstance(where, Location):
        return where
    text = os.fspath(where)
    if not has_scheme(text) or text.startswith("file://"):
        text = text.removeprefix("file://")
        return Location(pafs.LocalFileSystem(), str(Path(text).expanduser().resolve()), text)
    return _remote(text, os.environ.get("AWS_ENDPOINT_URL"))


@functools.lru_cache(maxsize=64)
def _remote(text: str, endpoint: str | None) -> Location:
    """Resolved once per URI (and S3 endpoint): an S3 filesystem asks for the bucket's region."""
    uri, _, query = text.partition("?")  # messages without credentials or options
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except ValueError:  # pyarrow's ArrowInvalid: a scheme it has no filesystem for
        fs, path = _fsspec(text)
    except OSError as err:  # S3 asks for the bucket's region here
        raise _unreachable(uri, err) from err
    return Location(fs, path.rstrip("/"), uri.rstrip("/"), query)


def _fsspec(uri: str) -> tuple[Any, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


@contextmanager
def local_copy(where: Where) -> Iterator[Path]:
    """A local folder with `where`'s files: the folder itself when it is on this disk, else a
    temporary copy (removed on exit)."""
    import tempfile

    loc = location(where)
    if loc.local is not None:
        yield loc.local
        return
    with tempfile.TemporaryDirectory(prefix="clef-copy-") as tmp:
        loc.get(Path(tmp))
        yield Path(tmp)


def upload_shards(folder: Path, target: Location) -> None:
    """A dataset's local shards to `target`: the shards, then the manifest (what readers open
    first), so a reader never sees a manifest naming a shard that is not there yet."""
    target.put(folder, skip=("manifest.json",), changed_only=True)
    (target / "manifest.json").write_bytes((folder / "manifest.json").read_bytes())
