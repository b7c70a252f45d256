"""`clef stack up|restart|env|status|down` (the local services) and `clef submit` (a clef
command as a Ray job on the stack's or a cluster's Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clef_core.common.errors import ClefError

console = Console()


stack_app = typer.Typer(
    help="Local services: Prefect, MLflow, Ray head, deployments.", no_args_is_help=True
)
StackDir = Annotated[Path, typer.Option(help="Data dir the services keep their state in.")]


@stack_app.command("up")
def stack_up(
    data_dir: StackDir = Path("data"),
    ports: Annotated[
        list[str] | None,
        typer.Option(
            "--port",
            help="NAME=PORT for prefect, mlflow, ray, ray_dashboard, ray_client, ray_agent "
            "(repeatable); others: the default if free, else any free port.",
        ),
    ] = None,
) -> None:
    """Start Prefect, MLflow, a Ray head and the deployment server on 127.0.0.1; on a stack
    that runs, start only the services that are not running."""
    from flows.ports import parse_ports
    from flows.stack import read_ports, read_state, up
    from flows.stack_auth import secret_path, user_env

    before = {s.name: s for s in read_state(data_dir.resolve())}
    for s in up(data_dir, asked=parse_ports(ports or [])):
        # The same process as before (PID and start time): it was running and `up` left it.
        if before.get(s.name) == s:
            console.print(f"[green]running[/] {s.name:12s} {s.url}  (pid {s.pid})", soft_wrap=True)
        else:
            console.print(
                f"[green]started[/] {s.name:12s} {s.url}  (pid {s.pid}, log {s.log})",
                soft_wrap=True,
            )
    console.print(
        f"secret (Ray token; Prefect and MLflow user clef): {secret_path(data_dir.resolve())}"
    )
    chosen = read_ports(data_dir)
    assert chosen is not None  # `up` saved them
    _print_env(user_env(data_dir, chosen))
    console.print('then: eval "$(clef stack env)"; prefect deployment run clef/smoke --watch')


@stack_app.command("restart")
def stack_restart(
    service: Annotated[str, typer.Argument(help="prefect, mlflow, ray or deployments.")],
    data_dir: StackDir = Path("data"),
) -> None:
    """Stop one service of the stack and start it again on its port and store."""
    from flows.stack import restart

    s = restart(data_dir, service)
    console.print(
        f"[green]restarted[/] {s.name:12s} {s.url}  (pid {s.pid}, log {s.log})", soft_wrap=True
    )


def _print_env(env: dict[str, str]) -> None:
    """`export` lines; the values are shell words already (the secret read by `$(cat ...)`)."""
    for key, value in env.items():
        typer.echo(f"export {key}={value}")


@stack_app.command("env")
def stack_env(data_dir: StackDir = Path("data")) -> None:
    """Print `export` lines for the stack's services and secret: eval "$(clef stack env)"."""
    from flows.stack import read_ports
    from flows.stack_auth import user_env

    ports = read_ports(data_dir)
    if ports is None:
        raise ClefError(f"no stack running for {data_dir.resolve()}: `clef stack up` first")
    _print_env(user_env(data_dir, ports))


@stack_app.command("status")
def stack_status(data_dir: StackDir = Path("data")) -> None:
    """Show each service of the stack: process alive, answering, URL and port."""
    from flows.stack import read_ports, status

    rows = status(data_dir)
    if not rows:
        console.print(f"no stack running for {data_dir.resolve()}")
    for s, alive, answering in rows:
        state = (
            "[green]up[/]"
            if alive and answering
            else "[red]down[/]"
            if not alive
            else "[yellow]starting[/]"
        )
        console.print(f"{state} {s.name:12s} {s.url}  (pid {s.pid})")
    ports = read_ports(data_dir)
    if ports is not None:
        console.print("ports: " + ", ".join(f"{k}={v}" for k, v in vars(ports).items()))


@stack_app.command("down")
def stack_down(data_dir: StackDir = Path("data")) -> None:
    """Stop the services `clef stack up` started (by PID; nothing else)."""
    from flows.stack import down

    stopped = down(data_dir)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def submit(
    args: Annotated[
        list[str] | None, typer.Argument(help="The clef command to run, after `--`.")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray job API (dashboard) URL; default $RAY_API_SERVER_ADDRESS, else the "
            "local stack's (`clef stack up`)."
        ),
    ] = None,
    working_dir: Annotated[
        Path, typer.Option(help="Checkout uploaded as the job's working directory.")
    ] = Path("."),
    upload: Annotated[
        bool, typer.Option(help="Upload --working-dir; --no-upload runs the nodes' install.")
    ] = True,
    wait: Annotated[bool, typer.Option(help="Follow the job's log until it ends.")] = True,
    data_dir: Annotated[
        Path, typer.Option(help="Data dir of the local stack whose Ray to use (no --address).")
    ] = Path("data"),
) -> None:
    """Run a clef command as a Ray job with the project's interpreter: clef submit -- finetune ..."""
    import os

    from flows.stack import read_ports
    from flows.stack_auth import auth_headers, read_secret
    from flows.submit import submit as submit_job

    ports = read_ports(data_dir)
    stack = f"http://127.0.0.1:{ports.ray_dashboard}" if ports else None
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or stack
    if address is None:
        raise ClefError(
            "no Ray address: pass --address http://<head>:8265, set "
            "RAY_API_SERVER_ADDRESS, or start the local stack (`clef stack up`)"
        )
    # The local stack's job API takes its token (a cluster's: Ray's own settings).
    headers = auth_headers("ray", read_secret(data_dir.resolve())) if address == stack else None
    where = working_dir if upload else None
    raise typer.Exit(submit_job(address, list(args or []), where, wait, console, headers))


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(submit)
