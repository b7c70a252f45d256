"""Files fetched once into a local cache, by URL or from the Hugging Face hub, checked by SHA-256.

Every remote file has a fixed place under the cache root (`cache_root`: `$CLEF_CACHE`, else
`$XDG_CACHE_HOME/clef/weights` or `~/.cache/clef/weights`), so a user without network can be
told in one line which file to put where. A file found there is used without any request.
Downloads go to a temporary name and are renamed into place only once complete and checked;
a cut or altered one is refused and removed.

SHA-256: where the source publishes one (OpenAI's URLs name it, open_clip's release files carry
its first digits, the hub's etag of a large file is its SHA-256, a URL may end in
`#sha256=HEX` as pip reads it) the file must match it. Where none is published, our choice:
the hash of the first download is recorded in `sha256.json` at the cache root (with the URL it
came from), and every later use is checked against the record, so a cached file that was cut or
changed since is caught rather than loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clef_core.common.download import Hub, NotThere, Remote, altered, from_hub, from_url, place
from clef_core.common.errors import ClefError

log = logging.getLogger(__name__)
RECORD = "sha256.json"  # at the cache root: {relative path: {"sha256": ..., "url": ...}}
_TRUE = {"1", "true", "yes", "on"}  # huggingface_hub's reading of HF_HUB_OFFLINE


def cache_root() -> Path:
    """Where fetched weights live: `$CLEF_CACHE`, else the user's cache dir + clef/weights."""
    if os.environ.get("CLEF_CACHE"):
        return Path(os.environ["CLEF_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clef" / "weights"


def offline() -> bool:
    """`HF_HUB_OFFLINE=1`: the hub's own switch, honoured for every download, read at each
    call (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


@dataclass(frozen=True)
class Fetched:
    path: Path
    url: str  # where it came from (a hub file: pinned to the commit it was downloaded at)
    sha256: str


def hub_endpoint() -> str:
    """`HF_ENDPOINT` as now set (a mirror, or a local server in the tests), else the hub."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_remote(repo: str, filename: str, root: Path) -> Remote:
    endpoint = hub_endpoint()
    url = f"{endpoint}/{repo}/resolve/main/{filename}"
    return Remote(url, root / "hf" / repo / filename, hub=Hub(repo, filename, endpoint))


def url_remote(url: str, root: Path) -> Remote:
    """A plain http(s) URL; `#sha256=HEX` on it is its published hash. Cached at
    url/<host>/<path> (readable, and two URLs never share a place)."""
    base, _, fragment = url.partition("#")
    parts = urllib.parse.urlsplit(base)
    names = [re.sub(r"[^\w.\-]", "_", p) for p in (parts.netloc, *parts.path.split("/")) if p]
    names = [n for n in names if n not in (".", "..")] or ["file"]
    digest = fragment.removeprefix("sha256=").lower() if fragment.startswith("sha256=") else None
    return Remote(base, root.joinpath("url", *names), digest or published_sha256(base))


def published_sha256(url: str) -> str | None:
    """The hash the URL itself names, by open_clip's conventions (`download_pretrained_from_url`):
    OpenAI's folder is the file's SHA-256; open_clip's release files end in its first digits."""
    parts = urllib.parse.urlsplit(url)
    folder, _, name = parts.path.rpartition("/")
    if parts.netloc.startswith("openaipublic"):
        return folder.rpartition("/")[2].lower() or None
    if "mlfoundations" in parts.path:
        return Path(name).stem.rpartition("-")[2].lower() or None
    return None


def fetch(alternatives: Sequence[Remote], root: Path) -> Fetched:
    """The first alternative found in the cache (no request), else the first one the network
    serves (the next is tried only when one is not there: e.g. a hub repo's safetensors file,
    then its .bin), downloaded once and checked. Offline or unreachable: one line naming
    the file to place and where."""
    for remote in alternatives:
        if remote.target.is_file():
            return _cached(remote, root)
    first = alternatives[0]
    if offline():
        raise ClefError(f"HF_HUB_OFFLINE is set and {place(first)}")
    for remote in alternatives:
        fetched = _download(remote, root)
        if fetched is not None:
            return fetched
    raise ClefError(f"none of {', '.join(r.url for r in alternatives)} exists (HTTP 404)")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_cached(path: Path, root: Path, url: str, published: str | None = None) -> str:
    """The SHA-256 of a file in the cache, checked against the published one, else against the
    record; a file seen for the first time (placed by hand, or made here) is recorded. A
    mismatch: the file is removed and refused in one line."""
    got = sha256_of(path)
    entry = _records(root).get(_key(root, path))
    expected = published or (entry or {}).get("sha256")
    if expected and not got.startswith(expected):
        path.unlink(missing_ok=True)
        what = "published" if published else "recorded when it was fetched"
        raise ClefError(
            f"{path}: SHA-256 {got[:16]}... is not the {what} {expected[:16]}... ({url}): a cut "
            "or altered file, removed; run again to fetch it anew"
        )
    if entry is None or entry.get("sha256") != got:
        remember(root, path, got, url)
    return got


def remember(root: Path, path: Path, sha256: str, url: str) -> None:
    """Record a cached file's SHA-256 and source. Written whole, then renamed: a reader never
    sees half a record (two processes racing lose one entry, recorded again at its next use)."""
    records = _records(root)
    root.mkdir(parents=True, exist_ok=True)
    records[_key(root, path)] = {"sha256": sha256, "url": url}
    tmp = root / f"{RECORD}.{os.getpid()}.part"
    tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
    os.replace(tmp, root / RECORD)


def _records(root: Path) -> dict[str, dict[str, str]]:
    path = root / RECORD
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ClefError(
            f"{path}: expected the cache's record of SHA-256s (JSON), found one it cannot read "
            f"({type(err).__name__}); remove it and run again"
        ) from None
    return records if isinstance(records, dict) else {}


def _key(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _cached(remote: Remote, root: Path) -> Fetched:
    sha = check_cached(remote.target, root, remote.url, remote.sha256)
    url = _records(root).get(_key(root, remote.target), {}).get("url", remote.url)
    return Fetched(remote.target, url, sha)


def _download(remote: Remote, root: Path) -> Fetched | None:
    """Download `remote` into its place, checked; None when the server has no such file."""
    remote.target.parent.mkdir(parents=True, exist_ok=True)
    log.warning(
        "downloading %s to %s (once: later runs use it from there)", remote.url, remote.target
    )
    try:
        if remote.hub is None:
            url, sha = remote.url, from_url(remote)
        else:
            url, published = from_hub(remote, remote.hub)
            sha = sha256_of(remote.target)
            if published and sha != published:
                remote.target.unlink(missing_ok=True)
                raise ClefError(altered(url, sha, published))
    except NotThere:
        return None
    remember(root, remote.target, sha, url)
    return Fetched(remote.target, url, sha)
