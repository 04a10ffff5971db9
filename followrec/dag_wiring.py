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

        params = steps.params_for_run(
            context["params"],
            (context.get("dag_run") and context["dag_run"].conf) or {},
            _triggering_extras(context),
        )
        result = steps.run(name, params)
        for asset in outlets:
            # The Asset event names what it hands over, so a DAG it triggers on another
            # host reads the same run folder and knows which snapshot it was given.
            context["outlet_events"][asset].extra = steps.handoff(params)
        return result

    return run()


def _triggering_extras(context: dict) -> list[dict]:
    """The `extra` of each Asset event that triggered this DAG run (none for a manual run)."""
    events = context.get("triggering_asset_events") or {}
    return [dict(event.extra or {}) for queue in events.values() for event in queue]
