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

from flows.clef_flow import ReproductionParams, clef

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


if __name__ == "__main__":
    from clef_core.runtime import configure_process

    configure_process()  # Ray's and MLflow's switches for the flow runs served here
    serve(*deployments(), limit=1)
