"""One download, by plain HTTP or through huggingface_hub, into its place in the cache
(`clef_core.common.fetch` decides what to fetch and keeps the record). A download that breaks
off, is cut short or does not match its published SHA-256 leaves nothing behind and is refused
in one line; an unreachable server gets one line naming the file to place and where."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from clef_core.common.errors import ClefError


@dataclass(frozen=True)
class Hub:
    """A file in a Hugging Face hub model repository (fetched through huggingface_hub)."""

    repo: str  # ORG/NAME
    filename: str
    endpoint: str  # the hub's base URL (HF_ENDPOINT, read at each call)
    revision: str = "main"


@dataclass(frozen=True)
class Remote:
    url: str  # where it is published (what an offline user downloads by hand)
    target: Path  # its place in the cache
    sha256: str | None = None  # published SHA-256 (or its first digits), if any
    hub: Hub | None = None  # fetched through huggingface_hub rather than plain HTTP


def place(remote: Remote) -> str:
    """What a user without network does: the file, where it is published, where it goes."""
    return (
        f"{remote.target.name} is not in the cache: download {remote.url} and place it at "
        f"{remote.target}"
    )


class NotThere(Exception):
    """The server has no such file (HTTP 404): the next alternative may be there."""


def altered(url: str, got: str, expected: str) -> str:
    return (
        f"{url}: the download's SHA-256 {got[:16]}... is not the published {expected[:16]}...: "
        "a cut or altered download, refused and removed; run again to fetch it anew"
    )


def from_url(remote: Remote) -> str:
    """Stream the URL to a temporary name, hashing; renamed into place only when complete
    and matching the published hash. Returns its SHA-256."""
    part = remote.target.with_name(f"{remote.target.name}.part")
    digest, size, length = hashlib.sha256(), 0, None
    try:
        with urllib.request.urlopen(remote.url, timeout=60) as response, part.open("wb") as out:
            length = response.headers.get("Content-Length")
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
                size += len(block)
    except urllib.error.HTTPError as err:
        part.unlink(missing_ok=True)
        if err.code == 404:
            raise NotThere from None
        raise ClefError(f"{remote.url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        part.unlink(missing_ok=True)
        host = urllib.parse.urlsplit(remote.url).netloc
        raise ClefError(f"cannot reach {host} ({err.reason}), and {place(remote)}") from None
    except (HTTPException, OSError) as err:  # cut mid-way: reset, timeout, short read
        part.unlink(missing_ok=True)
        raise ClefError(f"{remote.url}: the download broke off ({err}); nothing kept") from None
    got = digest.hexdigest()
    if length is not None and size != int(length):
        part.unlink(missing_ok=True)
        raise ClefError(
            f"{remote.url}: the download is cut ({size} of {length} bytes): refused and removed; "
            "run again to fetch it anew"
        )
    if remote.sha256 and not got.startswith(remote.sha256):
        part.unlink(missing_ok=True)
        raise ClefError(altered(remote.url, got, remote.sha256))
    os.replace(part, remote.target)
    return got


def from_hub(remote: Remote, hub: Hub) -> tuple[str, str | None]:
    """Download a hub file into its place with huggingface_hub (auth, mirrors, its own size
    check), pinned to the commit the first request finds. Returns the pinned URL and the
    published SHA-256 (the etag of a large (LFS) file is its SHA-256; a small file's is a git
    hash, which says nothing here: then None)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError

    # ORG/NAME's folder in the cache: the repo's files keep their own sub-folders below it
    local_dir = remote.target.parents[len(Path(hub.filename).parts) - 1]
    url = hf_hub_url(hub.repo, hub.filename, revision=hub.revision, endpoint=hub.endpoint)
    try:
        meta = get_hf_file_metadata(url, endpoint=hub.endpoint)
        commit = meta.commit_hash or hub.revision
        pinned = hf_hub_url(hub.repo, hub.filename, revision=commit, endpoint=hub.endpoint)
        hf_hub_download(
            hub.repo, hub.filename, revision=commit, local_dir=local_dir, endpoint=hub.endpoint
        )
    except RemoteEntryNotFoundError:
        raise NotThere from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 404:
            raise NotThere from None
        first = str(err).strip().splitlines()[0]
        raise ClefError(f"{url}: the hub refused it ({first})") from None
    except _network_errors() as err:
        host = urllib.parse.urlsplit(hub.endpoint).netloc
        raise ClefError(f"cannot reach {host} ({_reason(err)}), and {place(remote)}") from None
    etag = (meta.etag or "").lower()
    return pinned, etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None


def _network_errors() -> tuple[type[BaseException], ...]:
    """What a request through huggingface_hub raises when the network fails: OSError and its
    HTTP client's errors (httpx2 from huggingface_hub 2.x, httpx before)."""
    errors: list[type[BaseException]] = [OSError, HTTPException]
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(importlib.import_module(module).HTTPError)
    return tuple(errors)


def _reason(err: Any) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
