"""A real HTTP server on 127.0.0.1 that serves weights as the Hugging Face hub and as plain
URLs do, and counts every request: what `clef_core.common.fetch` talks to in the tests.

Hub layout (what huggingface_hub asks, `HF_ENDPOINT` pointing here): `HEAD` then `GET`
`/{org}/{name}/resolve/{revision}/{filename}`; the answer carries `X-Repo-Commit` (the commit
the revision is at), `ETag` (a large file's SHA-256, as the hub gives for LFS files) and its
size; a file the repo lacks is a 404 with `X-Error-Code: EntryNotFound`."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")


@dataclass
class Served:
    body: bytes
    etag: str | None = None  # what the hub says the file's SHA-256 is (default: the body's)
    cut: bool = False  # send half the body under the full Content-Length, then hang up


@dataclass
class WeightsServer:
    url: str = ""
    hub: dict[tuple[str, str], Served] = field(default_factory=dict)  # (repo, filename)
    files: dict[str, Served] = field(default_factory=dict)  # URL path -> file
    requests: list[str] = field(default_factory=list)  # "METHOD path", in order

    def find(self, path: str) -> tuple[Served | None, bool]:
        """The file at `path`, and whether the path is in the hub's layout."""
        match = _RESOLVE.match(path)
        if match and (match["repo"], match["filename"]) in self.hub:
            return self.hub[(match["repo"], match["filename"])], True
        return self.files.get(path), bool(match)


def _handler(server: WeightsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            server.requests.append(f"{self.command} {self.path}")
            served, hub = server.find(self.path)
            if served is None:
                self.send_response(404)
                if hub:
                    self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(served.body)))
            if hub:
                etag = served.etag or hashlib.sha256(served.body).hexdigest()
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Repo-Commit", COMMIT)
            self.end_headers()
            if body:
                self.wfile.write(
                    served.body[: len(served.body) // 2] if served.cut else served.body
                )

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    return Handler


@contextmanager
def weights_server() -> Iterator[WeightsServer]:
    """A running server (port chosen by the system), stopped on exit."""
    state = WeightsServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
