"""`clef submit`: a `clef` command as a Ray job on a cluster whose nodes have the project installed.

`ray job submit ... -- python -m flows.cli ...` runs the job with the `python` on the raylet's
PATH, which on a node set up with a venv is the system interpreter (no project there). This
fills the runtime environment instead: the job's PATH starts with the bin folder of the
interpreter that runs `clef submit` (a venv at the same path on every node, or the image's), so
`clef` and `python` are the project's; the working directory is uploaded (Ray skips what
.gitignore lists) so the job runs this checkout's code. Then it follows the job's log and
exits with the job's outcome.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from rich.console import Console

from clef_core.common.errors import ClefError

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def runtime_env(working_dir: Path | None, bin_dir: Path | None = None) -> dict:
    """The job's runtime env: PATH led by the project's interpreter folder, the code uploaded."""
    bin_dir = bin_dir or Path(sys.executable).parent
    env: dict = {"env_vars": {"PATH": f"{bin_dir}:${{PATH}}"}}  # Ray expands ${PATH} on the node
    if working_dir is not None:
        if not (working_dir / "flows" / "cli.py").is_file():
            raise ClefError(
                f"--working-dir {working_dir} is not a clef checkout (no flows/cli.py there)"
            )
        env["working_dir"] = str(working_dir.resolve())
    return env


def submit(
    address: str,
    args: list[str],
    working_dir: Path | None,
    wait: bool,
    console: Console,
    headers: dict[str, str] | None = None,
) -> int:
    """Submit `clef ARGS` as a job; with `wait`, stream its log and return 0 when it succeeded.
    `headers`: the local stack's token (`flows.stack_auth`); a cluster's comes from Ray's
    own settings (RAY_AUTH_MODE=token and its token file or RAY_AUTH_TOKEN)."""
    from ray.job_submission import JobSubmissionClient

    if not args:
        raise ClefError("expected a clef command after `clef submit --`, e.g. `-- finetune ...`")
    try:
        client = JobSubmissionClient(address, headers=headers)
    except (ConnectionError, RuntimeError) as err:
        raise ClefError(f"no Ray job API at {address}: {err}") from None
    entrypoint = shlex.join(["clef", *args])
    job = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env(working_dir))
    console.print(f"submitted {job} to {address}: {entrypoint}")
    if not wait:
        console.print(f"follow it: ray job logs --address {address} --follow {job}")
        return 0
    shown = 0
    while True:
        status = str(client.get_job_status(job).value)
        logs = client.get_job_logs(job)
        if len(logs) > shown:
            console.out(logs[shown:], end="", highlight=False)
            shown = len(logs)
        if status in TERMINAL:
            break
        time.sleep(2)
    info = client.get_job_info(job)
    line = f"job {job} {status}" + (f": {info.message}" if status != "SUCCEEDED" else "")
    console.print(line, highlight=False, soft_wrap=True)
    return 0 if status == "SUCCEEDED" else 1
