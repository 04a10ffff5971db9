"""followrec_experiments: read the running online experiment and act on a canary.
Wiring only."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag

from followrec.dag_wiring import chain_steps
from followrec.step_names import EXPERIMENT_STEPS

DOC = """
### followrec_experiments

| task | what it does | CLI |
|---|---|---|
| `experiment_report` | attribute follows to the impressions that showed them; per arm follow-through, follows per user, retention, coverage, popularity; lift with 95% CIs, p-values, sample-ratio check; JSON in `RUN/experiments/`, MLflow run `experiment-NAME` (table + plot) | `followrec experiment report NAME` |
| `experiment_decide` | a canary: roll the arm back when a guardrail (follow-through, retention) is significantly worse than control; move `champion` to the canary's version (and publish its index) when its follow-through lift is significant at the planned size; else keep running | `followrec experiment decide NAME` |

Runs every 15 minutes on the running experiment (or the `experiment` Param). Canary flow:
train (followrec_training, offline gate) → `followrec experiment create NAME --canary vN
--share 0.05` → this DAG watches it → rolled back, or promoted.
"""


@dag(
    dag_id="followrec_experiments",
    schedule=timedelta(minutes=15),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one decision at a time
    tags=["followrec", "experiments"],
    doc_md=DOC,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "run_dir": Param("runs/pipeline", type="string", description="the run folder"),
        "experiment": Param(None, type=["null", "string"], description="default: the running one"),
        "tracking_uri": Param(None, type=["null", "string"], description="default: RUN/mlflow.db"),
        "extra_settings": Param(
            None, type=["null", "array"], description="section.key=value items"
        ),
    },
)
def followrec_experiments() -> None:
    """Running experiment -> report -> canary decision."""

    chain_steps(EXPERIMENT_STEPS)


followrec_experiments()
