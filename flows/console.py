"""A readable console for long runs: library chatter to a log file, the DAG's progress kept.

Prefect (temporary server start, its documentation links) and Ray (instance start) log at INFO
on the console by default, between our progress bars and tables. `quiet_libraries` sends those
lines to a file and keeps on the console what a user follows: the flow's and tasks' own lines
(Prefect's `prefect.flow_runs` / `prefect.task_runs` loggers: what each step did, its state),
and every warning and error. Prefect's API handler is not touched: the UI keeps every line.
"""

from __future__ import annotations

import logging
from pathlib import Path

# Loggers whose INFO lines are the run's own progress (ours, through `get_run_logger`).
KEPT = ("prefect.flow_runs", "prefect.task_runs")


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith(KEPT)


def quiet_libraries(log_file: Path) -> Path:
    """Route Prefect's and Ray's own INFO lines to `log_file` (appended); returns it."""
    import ray  # noqa: F401  (sets up Ray's "ray" logger, which this adjusts)
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # Prefect's handlers, which this adjusts

    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file)
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("", "ray"):  # root (where Prefect's loggers end) and Ray's own
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if type(handler) is not logging.FileHandler:
                handler.addFilter(_ConsoleFilter())
        if to_file not in logger.handlers:
            logger.addHandler(to_file)
    return log_file
