"""Serve the `clef` flow's deployments: `clef/full-reproduction` (every protocol, the paper's
settings; point `roots` at your datasets) and `clef/smoke` (BP4D fold 1 on the synthetic data,
`cpu-tiny`, a few steps: minutes on 2 cores). `clef stack up` runs this; by hand:

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve

then `prefect deployment run clef/smoke` (or `clef/full-reproduction --param roots=...`).
The same two deployments are declared in infra/prefect/prefect.yaml for `prefect deploy`.
"""

from __future__ import annotations

from typing import Any

from prefect import serve

from clef_core.run.reproduction import ReproductionParams
from flows.clef_flow import clef

# What `clef/smoke` runs: small enough for CI, every stage of the DAG still on the path.
SMOKE = ReproductionParams(
    preset="cpu-tiny",
    datasets=["bp4d"],
    folds=[1],
    synthetic_preset="test",
    overrides=[
        "stage1.epochs=1",
        "stage1.steps_per_epoch=4",
        "stage2.epochs=1",
        "stage2.steps_per_epoch=4",
        "stage1.batch_size=16",
        "stage2.batch_size=16",
    ],
)
FULL = ReproductionParams(preset="paper", synthetic=False)


def stored(params: ReproductionParams) -> dict[str, Any]:
    """A deployment's parameters: every one, so a run's `--param NAME=...` changes only NAME."""
    return params.model_dump(mode="json")


def _deployment(name: str, params: ReproductionParams, description: str, tags: list[str]) -> Any:
    deployment = clef.to_deployment(
        name=name, parameters=stored(params), description=description, tags=tags
    )
    # The run form starts from each parameter's schema default, which is the flow signature's
    # (cpu-tiny, synthetic): make it this deployment's stored value, so the form and a run
    # without parameters agree.
    for key, value in stored(params).items():
        deployment._parameter_openapi_schema.properties[key]["default"] = value
    return deployment


def deployments() -> list:
    return [
        _deployment(
            "full-reproduction",
            FULL,
            "Every protocol of the paper (Tables 2-6) on your datasets: set roots.",
            ["clef"],
        ),
        _deployment(
            "smoke",
            SMOKE,
            "BP4D fold 1 on the embedded synthetic data, cpu-tiny, a few steps.",
            ["clef", "smoke"],
        ),
    ]


def crash_orphans() -> list[str]:
    """Mark Crashed every run of these deployments still Running or Pending: this process runs
    them as its children, so at its start any such run is an orphan of an earlier one (killed
    with the stack, or lost while the Prefect server was away) that would show Running forever
    (ours; Prefect's own zombie detection needs heartbeats plus an automation). In-process
    `clef reproduce` runs have no deployment and are left alone. Returns the runs' names."""
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    async def crash() -> list[str]:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=["full-reproduction", "smoke"])
                ),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
                    )
                ),
            )
            message = (
                "its process ended with the deployment server (or lost the Prefect server); "
                "run the deployment again: finished units come from the cache"
            )
            for run in runs:
                await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            return [run.name for run in runs]

    return asyncio.run(crash())


if __name__ == "__main__":
    from clef_core.common.runtime import configure_process

    configure_process()  # Ray's and MLflow's switches for the flow runs served here
    for name in crash_orphans():
        print(f"flow run {name}: Running with no process to run it; marked Crashed", flush=True)
    serve(*deployments(), limit=1)
