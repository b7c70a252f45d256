"""Runs `process_sequence` over a dataset's sequences as Ray tasks: a local Ray instance by
default, a cluster given its address. Shows progress and returns the per-sequence results."""

from __future__ import annotations

import ray
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from clef_core.common.runtime import init_ray
from faces.native import relog
from preprocessing.pipeline import PreprocessOptions, SequenceResult, process_sequence
from preprocessing.readers import SequenceRef

CRASHED = (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError)


def run_sequences(
    opts: PreprocessOptions,
    sequences: list[SequenceRef],
    address: str | None = None,
    show_progress: bool = True,
) -> list[SequenceResult]:
    """Every sequence's result. A task whose worker process died (killed, out of memory, a
    decoder's crash on a bad file) is reported as a failed sequence; an exception raised in a
    task is a bug (bad inputs are caught inside it) and stops the run with its traceback."""
    started = init_ray(address)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(process_sequence)
        pending = {task.remote(opts, seq): seq for seq in sequences}
        results: list[SequenceResult] = []
        with Progress(
            TextColumn(f"[bold]{opts.dataset}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[frames]} frames"),
            TimeElapsedColumn(),
            disable=not show_progress,
        ) as progress:
            bar = progress.add_task(opts.dataset, total=len(pending), frames=0)
            frames = 0
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    seq = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except CRASHED as err:  # the process died: report, keep going
                        result = SequenceResult(
                            seq.key, seq.subject, seq.task, -1, failed=f"{seq.key}: {err}"
                        )
                    relog(result.decoder_output)  # a worker's decoder lines: this log file
                    results.append(result)
                    frames += result.frames
                    progress.update(bar, advance=1, frames=frames)
        return sorted(results, key=lambda r: r.key)
    finally:
        if started:
            ray.shutdown()
