"""followrec_training: fetch the training set from Feast, train the two-tower model, score
it against every narrow source, gate it, build and validate its index, promote it. Runs when
followrec_features updates its Asset, or when triggered. Wiring only: each task is one call
into followrec.steps."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag

from followrec.dag_wiring import FEATURES_ASSET, chain_steps
from followrec.step_names import TRAINING_STEPS

DOC = """
### followrec_training

| task | what it does | CLI |
|---|---|---|
| `training_set` | `get_historical_features` for every user and account at the snapshot time (point-in-time join) into `RUN/training_set` | `followrec step training_set` |
| `train` | train the two-tower variants (MLflow nested runs, checkpoints; a retry resumes) | `followrec step train` |
| `evaluate` | score the models on the training set and every narrow source; `report.json`; register `followrec-two-tower` with metrics and feature services as tags | `followrec step evaluate` |
| `gate` | beat the `champion` alias and the floors on Recall@100 and MAP@100; a rejection is tagged and the index tasks do nothing | `followrec step gate` |
| `build_index` | encode every producer; the factory picks exact/HNSW/IVF for the target ANN recall | `followrec step build_index` |
| `validate_index` | checksum, count, dimension, ANN recall, smoke search | `followrec step validate_index` |
| `promote` | move `champion` (old one kept as `previous_champion`) and publish the index together | `followrec step promote` |

Params: the run folder (the one followrec_features filled), epochs, K values, variants,
floors, target ANN recall, tracking URI, extra settings. Re-running a run is idempotent.
"""


@dag(
    dag_id="followrec_training",
    schedule=[FEATURES_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one run at a time writes a run folder
    tags=["followrec", "training", "mlflow"],
    doc_md=DOC,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    params={
        "run_dir": Param("runs/pipeline", type="string", description="the run folder"),
        "epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="empty: auto (8 epochs, more on small graphs; the CLI's default)",
        ),
        "ks": Param([10, 50, 100, 200], type="array"),
        "variants": Param(["two_tower"], type="array", description="two-tower variants"),
        "floor_recall_at_100": Param(0.0, type="number", minimum=0, maximum=1),
        "floor_map_at_100": Param(0.0, type="number", minimum=0, maximum=1),
        "target_ann_recall": Param(0.95, type="number", minimum=0, maximum=1),
        "tracking_uri": Param(None, type=["null", "string"], description="default: RUN/mlflow.db"),
        "extra_settings": Param(
            None, type=["null", "array"], description="section.key=value items"
        ),
    },
)
def followrec_training() -> None:
    """Training set -> model -> gate -> index -> champion."""

    chain_steps(TRAINING_STEPS)


followrec_training()
