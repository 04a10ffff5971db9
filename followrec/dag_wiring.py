"""What the DAG files share: the features Asset and a chain of thin tasks, each one call
to `followrec.steps.run(task_id, params)`."""

from __future__ import annotations

from airflow.sdk import Asset, task

FEATURES_ASSET = Asset(name="followrec_features", uri="file:///followrec/features")


def chain_steps(names: tuple[str, ...], outlets: dict[str, list] | None = None) -> list:
    """One task per step name, run in the given order; `outlets` maps a task to its Assets."""
    tasks = [_step_task(name, (outlets or {}).get(name, [])) for name in names]
    for upstream, downstream in zip(tasks, tasks[1:]):
        upstream >> downstream
    return tasks


def _step_task(name: str, outlets: list):  # noqa: ANN202 - an Airflow XComArg
    @task(task_id=name, outlets=outlets)
    def run(**context) -> dict:  # noqa: ANN003
        from followrec import steps

        return steps.run(name, context["params"])

    return run()
