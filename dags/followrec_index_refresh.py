"""followrec_index_refresh: re-embed every producer with the current champion on the latest
feature snapshot and publish a new index version, without retraining. Wiring only."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag

from followrec.dag_wiring import chain_steps
from followrec.step_names import REFRESH_STEPS

DOC = """
### followrec_index_refresh

| task | what it does | CLI |
|---|---|---|
| `refresh_index` | load the `champion`, fetch the latest producer features from Feast, encode them, write `indexes/model-vN-refresh-TIME` | `followrec step refresh_index` |
| `validate_refresh` | checksum, count, dimension, ANN recall, smoke search | `followrec step validate_refresh` |
| `publish_refresh` | publish it and tag the champion's `index.version`, unless the champion changed meanwhile | `followrec step publish_refresh` |

Run it after followrec_features when producers' features move faster than the model needs
retraining. Accounts newer than the champion (no id embedding) are embedded from their
features and added (`new_accounts` in the task's result).
"""


@dag(
    dag_id="followrec_index_refresh",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one run at a time writes a run folder
    tags=["followrec", "index"],
    doc_md=DOC,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "run_dir": Param("runs/pipeline", type="string", description="the run folder"),
        "target_ann_recall": Param(0.95, type="number", minimum=0, maximum=1),
        "tracking_uri": Param(None, type=["null", "string"], description="default: RUN/mlflow.db"),
        "extra_settings": Param(
            None, type=["null", "array"], description="section.key=value items"
        ),
    },
)
def followrec_index_refresh() -> None:
    """Champion + fresh features -> new index version."""

    chain_steps(REFRESH_STEPS)


followrec_index_refresh()
