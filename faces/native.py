"""Native decoders' own output kept off the console.

FFmpeg (bundled inside OpenCV and decord), libjpeg and OpenCV's logger print their complaints
about a damaged file ("moov atom not found", "Premature end of JPEG file") straight to file
descriptor 2, past Python's logging and past any `--verbose` choice. The DecodeError raised
for that file already tells the user what matters, so around each native call fd 2 points to
a temporary file, and what landed there goes to the "faces.decode" logger at INFO: the
`clef` commands' log file (`flows.console.quiet_libraries`), never the console.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

log = logging.getLogger("faces.decode")

# fd 2 is one per process: two threads redirecting at once would restore each other's
# target (and leave stderr pointing at a temporary file), so redirections take turns.
_turn = threading.Lock()


class NativeOutput:
    """What native code printed on fd 2 while reading one file (`name`); logged on close."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        # unbuffered: reads what fd 2 wrote; closed by close(), at the file's end
        self._sink = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115

    @contextmanager
    def caught(self) -> Iterator[None]:
        """fd 2 goes to this file's sink for the span of the block (one native call: never
        across a generator's yield, or the caller's own stderr lines would be caught too)."""
        with _turn:
            sys.stderr.flush()  # Python's pending lines belong on the real stderr
            try:
                saved = os.dup(2)
            except OSError:  # no fd 2 at all (a daemon): nothing can reach a console
                yield
                return
            os.dup2(self._sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)

    def _read(self) -> list[str]:
        if self._sink.closed:
            return self.lines
        self._sink.seek(0)  # fd 2 shares this offset: it ends at the end again
        text = self._sink.read().decode(errors="replace")
        return [line.strip() for line in text.splitlines() if line.strip()]

    def close(self) -> list[str]:
        """Log what was caught, at INFO (the log file), and return its lines."""
        if not self._sink.closed:
            self.lines = self._read()
            self._sink.close()
            for line in self.lines:
                log.info("%s: %s", self.name, line)
        return self.lines

    def last(self) -> str:
        """The last line caught so far: the decoder's own reason, for a DecodeError."""
        lines = self._read()
        return lines[-1] if lines else ""

    def __enter__(self) -> NativeOutput:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
