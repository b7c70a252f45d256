"""Entry-point glue for preprocessing: run datasets through the pipeline, print summaries."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from clef_core.common.manifest import Manifest, manifest_path
from flows.console import print_table
from preprocessing.distributed import run_sequences
from preprocessing.pipeline import PreprocessOptions, finish, plan

# rebuilt: shards that were there but did not open or match the manifest (built again)
COLUMNS = ("seqs", "skipped", "rebuilt", "failed", "frames", "faces %", "no face", "unread",
           "s", "frames/s")  # fmt: skip


def preprocess_dataset(
    opts: PreprocessOptions, ray_address: str | None, console: Console
) -> Manifest:
    """Preprocess one dataset (Ray tasks), write its manifest, print the summary table."""
    sequences, issues = plan(opts)
    start = time.perf_counter()
    results = run_sequences(opts, sequences, ray_address)
    seconds = time.perf_counter() - start
    manifest = finish(opts, results, issues)
    frames, faces = manifest.rows, manifest.rows - manifest.no_face
    table = Table(title=f"{opts.dataset}: shards in {opts.shard_dir / opts.dataset}")
    for col in COLUMNS:
        table.add_column(col, justify="right")
    table.add_row(
        str(len(results)),
        str(sum(r.skipped for r in results)),
        str(sum(r.rebuilt for r in results)),  # there, but cut, unreadable or outdated
        str(len(manifest.failed_sequences)),
        str(frames),
        f"{100 * faces / max(frames, 1):.1f}",
        str(manifest.no_face),
        str(manifest.unreadable),
        f"{seconds:.1f}",
        f"{frames / max(seconds, 1e-9):.0f}",
    )
    print_table(console, table)
    bad = manifest.failed_sequences + manifest.unreadable_examples
    for message in bad[:10]:
        console.print(f"[red]unreadable:[/] {message}", highlight=False)
    for message in manifest.issues[: max(0, 10 - len(bad))]:
        console.print(f"[yellow]warning:[/] {message}", highlight=False)
    hidden = len(bad) + len(manifest.issues) - 10
    if hidden > 0:
        console.print(f"(+{hidden} more in {manifest_path(opts.shard_dir, opts.dataset)})")
    return manifest
