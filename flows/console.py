"""A readable console for the `clef` commands: library chatter to a log file, tables uncut.

Prefect (temporary server start, its documentation links), Ray (instance start) and Ray Data
log at INFO on the console by default, between our progress bars and tables. Every command
that starts them calls `quiet_libraries`, which sends those lines to a file and keeps on the
console what a user follows: the flow's and tasks' own lines (what each step did, logged by our
code through Prefect's `prefect.flow_runs` / `prefect.task_runs` loggers), and every warning and
error. Prefect's engine logs on those loggers too ("Beginning flow run", "Finished in state
Completed()"): those INFO lines, written by Prefect's own modules, go to the file. So do
the messages FFmpeg, libjpeg and OpenCV print on a damaged video or image, which
`faces.native` catches off fd 2 (`clef preprocess`: in Ray's workers, and logged here as each
sequence's result comes back).
`clef --verbose` (the CLI's switch) keeps them all on the console too. Prefect's API handler
is not touched: the UI keeps every line.

`print_table`: rich lays a table out to the console's width, which is 80 columns whenever
the output is not a terminal (a pipe, `make demo | tee`, a CI log): cells then end in "…".
There a table is printed at its natural width instead.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from rich.console import Console, RenderableType

# Loggers whose INFO lines are the run's own progress (ours, through `get_run_logger`).
KEPT = ("prefect.flow_runs", "prefect.task_runs")
# Where Prefect's engine lines come from (found without importing Prefect).
_PREFECT_SPEC = importlib.util.find_spec("prefect")
_PREFECT_CODE = (  # a prefix no path has when Prefect is absent
    str(Path(_PREFECT_SPEC.origin).parent) if _PREFECT_SPEC and _PREFECT_SPEC.origin else "\0"
)

WIDE = 200  # columns a table may take when the output is not a terminal
_state: dict[str, object] = {"verbose": False, "file": None}


def set_verbose(verbose: bool) -> None:
    """`clef --verbose`: library log lines stay on the console (and still go to the file)."""
    _state["verbose"] = verbose


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return record.name.startswith(KEPT) and not record.pathname.startswith(_PREFECT_CODE)


def quiet_libraries(log_file: Path, ray: bool = True, prefect: bool = True) -> Path:
    """Route the libraries' INFO lines to `log_file` (appended; a later call moves them to
    its own file); returns it. `ray` / `prefect`: set up (import) those libraries' loggers
    first, for commands that use them (a later import would install its handlers anew)."""
    if ray:
        import ray as _ray  # noqa: F401  (sets up Ray's "ray" logger, which this adjusts)
    if prefect:
        from prefect.logging.configuration import ensure_logging_setup

        ensure_logging_setup()  # Prefect's handlers, which this adjusts

    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file)
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous = _state["file"]
    # the native decoders' messages on a damaged file ("moov atom not found"), caught off fd 2
    # by `faces.native` (or brought back from Ray's workers by `run_sequences`) and logged at
    # INFO: below the root's WARNING, so let them through
    logging.getLogger("faces").setLevel(logging.INFO)
    for name in ("", "ray"):  # root (where Prefect's loggers end) and Ray's own
        logger = logging.getLogger(name)
        if isinstance(previous, logging.Handler) and previous in logger.handlers:
            logger.removeHandler(previous)
        for handler in logger.handlers:
            filtered = any(isinstance(f, _ConsoleFilter) for f in handler.filters)
            if type(handler) is not logging.FileHandler and not filtered and not _state["verbose"]:
                handler.addFilter(_ConsoleFilter())
        logger.addHandler(to_file)
    if isinstance(previous, logging.Handler):
        previous.close()
    _state["file"] = to_file
    return log_file


def print_table(console: Console, table: RenderableType) -> None:
    """Print `table` whole: at the terminal's width on a terminal, else at its natural width
    (never the 80-column default of a pipe, which cuts cells)."""
    if console.is_terminal:
        console.print(table)
        return
    # A table takes no more than its natural width, so a wide allowance changes nothing else
    # (Console.print's own `width` cannot exceed the console's).
    wide = Console(file=console.file, width=max(console.width, WIDE), no_color=console.no_color)
    wide.print(table)


def verbose_argument_first(argv: list[str]) -> list[str]:
    """`clef finetune ... --verbose` as `clef --verbose finetune ...`: the switch is the CLI's,
    accepted anywhere before a `--` (after it, arguments belong to the command run)."""
    end = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != "--verbose"]
    if len(head) == end:
        return argv
    return ["--verbose", *head, *argv[end:]]
