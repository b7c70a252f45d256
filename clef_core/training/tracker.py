"""What training asks of experiment tracking, and no more: the Ray Train workers log each
epoch's metrics into the unit's run. Tracking (`clef_core.tracking`) implements it; training
never imports tracking, it is handed a `TrackerFactory` by whoever opened the run.

The factory, not a tracker, crosses to the workers: it is pickled into the train loop's
config and called on rank 0 of the workers, which opens that process's own tracker there
(`clef_core.tracking.spool.SpoolTarget`). Every other rank, and a run without tracking, gets
the `NullTracker`, so the loop has no `if tracking:` branches."""

from __future__ import annotations

from typing import Protocol


class Tracker(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self, timeout: float = ...) -> int:
        """Stop; returns how many calls are not sent yet (sent later by the driver)."""
        ...


class TrackerFactory(Protocol):
    """Opens a tracker for the run, in the process that calls it (a picklable value)."""

    def __call__(self) -> Tracker: ...


class NullTracker:
    """Records nothing: ranks other than 0, and runs without tracking."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def close(self, timeout: float = 0) -> int:
        return 0


def open_tracker(factory: TrackerFactory | None, rank: int) -> Tracker:
    """Rank 0's tracker from `factory`; the null tracker for every other rank or no factory."""
    return factory() if factory is not None and rank == 0 else NullTracker()
