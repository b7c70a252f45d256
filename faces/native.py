"""Native decoders' own output kept off the console.

FFmpeg (bundled inside OpenCV and decord), libjpeg and OpenCV's logger print their complaints
about a damaged file ("moov atom not found", "Premature end of JPEG file") straight to file
descriptor 2, past Python's logging and past any `--verbose` choice. The DecodeError raised
for that file already tells the user what matters, so around each native call fd 2 points to
a temporary file (one per process), and what landed there goes to the "faces.decode" logger
at INFO when the file's `NativeOutput` closes: the `clef` commands' log file
(`flows.console.quiet_libraries`), never the console. Inside `collected()` (preprocessing's
Ray tasks, whose processes have no such log file) the lines are gathered instead, for the
caller to send back and log (`relog`) where the log file is.

fd 2 is one per process, while Python's own stderr writes may come from any thread: at the
first capture Python's stderr moves to a copy of fd 2 (`_python_off_fd2`), so only native
writes ever go through fd 2 and a capture never takes another thread's Python output.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import IO, Any

log = logging.getLogger("faces.decode")

# fd 2 is one per process: two threads redirecting at once would restore each other's
# target (and leave stderr pointing at the sink), so redirections take turns; the one sink
# is then never written by two captures at once.
_turn = threading.Lock()
_sink: dict[str, IO[bytes]] = {}  # "file": the process's sink, made at its first capture
_gathering = threading.local()  # .lines: the list `collected()` gathers into, in this thread


def _after_fork() -> None:
    # a forked child shares the parent's sink (and its offset): it makes its own; and a lock
    # held by another of the parent's threads would never be released in the child
    global _turn
    _turn = threading.Lock()
    _sink.clear()


os.register_at_fork(after_in_child=_after_fork)


def _python_off_fd2() -> None:
    """Point Python's stderr (`sys.stderr` and the logging handlers writing to it) at a copy
    of fd 2 when it writes to fd 2 itself. While one thread redirects fd 2 to the sink,
    another thread's Python lines (a warning logged, a rich console on stderr, a traceback)
    would otherwise land in the sink, to be relogged as the decoder's, or lost; on the copy
    they reach the real stderr. Done once (the first capture), or again if stderr is set back
    to fd 2. `sys.__stderr__` stays as it is."""
    old = sys.stderr
    try:
        if old is None or old.fileno() != 2:
            return  # already moved, or not on fd 2 at all (captured, a StringIO)
        old.flush()
        copy = os.dup(2)
    except (AttributeError, OSError, ValueError):
        return
    try:
        new = open(  # noqa: SIM115  (the process's stderr from now on)
            copy,
            "w",
            buffering=1,
            encoding=getattr(old, "encoding", None),
            errors=getattr(old, "errors", None),
        )
    except (LookupError, OSError, ValueError):
        os.close(copy)
        return
    sys.stderr = new
    loggers: list[Any] = [logging.root, *logging.root.manager.loggerDict.values()]
    for logger in loggers:  # a PlaceHolder has no handlers
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                handler.setStream(new)
                console = getattr(handler, "console", None)  # Prefect's: a rich Console on it
                if getattr(console, "file", None) is old:
                    console.file = new  # type: ignore[union-attr]


def _the_sink() -> IO[bytes] | None:
    """The process's sink, emptied; None where it cannot be made or emptied (/tmp full, out
    of file descriptors): a machine's fault, never to be counted against the file read, so
    that read goes on without capture."""
    try:
        if "file" not in _sink:
            # unbuffered: reads what fd 2 wrote; kept open for the process's life
            _sink["file"] = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115
        sink = _sink["file"]
        sink.seek(0)  # fd 2 shares this offset: its writes start at 0
        sink.truncate()
    except OSError:
        return None
    return sink


class NativeOutput:
    """What native code printed on fd 2 while reading one file (`name`); logged on close."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self._closed = False

    @contextmanager
    def caught(self) -> Iterator[None]:
        """fd 2 goes to the sink for the span of the block (one native call: never across a
        generator's yield, or the caller's own stderr lines would be caught too)."""
        with _turn:
            _python_off_fd2()
            sink = _the_sink()
            try:
                saved = os.dup(2) if sink is not None else None
            except OSError:  # no fd 2 at all (a daemon), or no fd left: run without capture
                saved = None
            if sink is None or saved is None:
                yield
                return
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                self._take(sink)

    def _take(self, sink: IO[bytes]) -> None:
        try:
            sink.seek(0)
            text = sink.read().decode(errors="replace")
        except OSError:
            return
        self.lines += [line.strip() for line in text.splitlines() if line.strip()]

    def close(self) -> list[str]:
        """Log what was caught, at INFO (the log file), or hand it to `collected()`'s list
        where one is open in this thread; return its lines."""
        if not self._closed:
            self._closed = True
            lines = [f"{self.name}: {line}" for line in self.lines]
            gathering: list[str] | None = getattr(_gathering, "lines", None)
            if gathering is not None:
                gathering += lines
            else:
                relog(lines)
        return self.lines

    def last(self) -> str:
        """The last line caught so far: the decoder's own reason, for a DecodeError."""
        return self.lines[-1] if self.lines else ""

    def __enter__(self) -> NativeOutput:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


@contextmanager
def collected() -> Iterator[list[str]]:
    """Within the block, this thread's closed `NativeOutput`s add their lines ("name: line")
    to the list given instead of logging them: a process whose log goes nowhere (a Ray
    worker) returns them to one that logs them (`relog`)."""
    outer = getattr(_gathering, "lines", None)
    lines: list[str] = []
    _gathering.lines = lines
    try:
        yield lines
    finally:
        _gathering.lines = outer


def relog(lines: Iterable[str]) -> None:
    """Log gathered lines ("name: line") as `NativeOutput.close` does: INFO, "faces.decode"."""
    for line in lines:
        log.info("%s", line)
