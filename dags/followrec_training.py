"""followrec_training: train the two-tower model, score it against every narrow source, then
index, validate, gate and promote it. Wiring only: each task is one call into followrec.steps."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

DOC = """
### followrec_training

| task | what it does | same step on the CLI |
|---|---|---|
| `evaluate` | load + split the graph, train the two-tower variants (MLflow nested runs, model registered as `followrec-two-tower`), score them and every narrow source; writes `report.json` | `followrec evaluate` |
| `promote` | build the producer index (factory: exact/HNSW/IVF), check its ANN recall, gate against the champion and the floors, move the `champion` alias and publish the index, or leave both as they were | `followrec promote --run OUT` |

Set the Params when triggering: dataset, languages, epochs, K values, floors, target ANN
recall, output folder and tracking URI. `extra_settings` takes any `section.key=value`.
"""


@dag(
    dag_id="followrec_training",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["followrec", "training"],
    doc_md=DOC,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    params={
        "dataset": Param("twitch", enum=["twitch", "edgelist", "synthetic", "parquet"]),
        "twitch_languages": Param(["DE", "ENGB", "ES", "FR", "PTBR", "RU"], type="array"),
        "edges": Param("", type="string", description="edge-list file (dataset=edgelist)"),
        "epochs": Param(8, type="integer", minimum=1),
        "ks": Param([10, 50, 100, 200], type="array"),
        "floor_recall_at_100": Param(0.0, type="number", minimum=0, maximum=1),
        "floor_map_at_100": Param(0.0, type="number", minimum=0, maximum=1),
        "target_ann_recall": Param(0.95, type="number", minimum=0, maximum=1),
        "out_dir": Param("runs/airflow", type="string"),
        "tracking_uri": Param("", type="string", description="default: OUT/mlflow.db"),
        "extra_settings": Param([], type="array", description="section.key=value items"),
    },
)
def followrec_training() -> None:
    """Train and evaluate, then promote."""

    @task
    def evaluate(**context) -> dict:  # noqa: ANN003
        """Train + score every source (followrec evaluate)."""
        from followrec import steps

        return steps.evaluate(context["params"])

    @task
    def promote(evaluated: dict, **context) -> dict:  # noqa: ANN003
        """Index, validate, gate, promote (followrec promote)."""
        from followrec import steps

        return steps.promote(context["params"])

    promote(evaluate())


followrec_training()
