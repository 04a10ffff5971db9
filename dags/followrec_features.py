"""followrec_features: ingest a follow graph, validate it, build both towers' feature
tables, validate them (with drift), register them in Feast and materialize the online
store. Produces the `followrec_features` Asset that schedules followrec_training.
Wiring only: each task is one call into followrec.steps."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag

from followrec.dag_wiring import FEATURES_ASSET, chain_steps
from followrec.step_names import FEATURES_STEPS

DOC = """
### followrec_features

| task | what it does | CLI |
|---|---|---|
| `ingest` | load the source (Twitch, an edge list, the generator, or contract Parquet) into `RUN/raw` | `followrec step ingest` |
| `validate_raw` | Great Expectations: required columns, nulls, unique ids, no self-follows, every endpoint a known account, minimum rows; Data Docs + MLflow run `validate-raw` | `followrec step validate_raw` |
| `build_features` | split, then consumer/producer feature tables from followrec.training follows into `RUN/features` | `followrec step build_features` |
| `validate_features` | keys, ranges, row counts, and drift of the follower-count distribution and mean follows against the last passing run | `followrec step validate_features` |
| `feast_apply` | write `RUN/feast/feature_store.yaml`, apply the Feast definitions (`followrec.features.feast_definitions`: entities, views, services named with the schema version, push source) | `followrec step feast_apply` |
| `materialize` | load the snapshot into the online store (SQLite, or Redis) and emit the Asset | `followrec step materialize` |

A failed validation stops the run before training: the registry and the published index
stay as they were. Params: the source, the run folder, the online store, extra settings.
"""


@dag(
    dag_id="followrec_features",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one run at a time writes a run folder
    tags=["followrec", "features", "feast"],
    doc_md=DOC,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "dataset": Param("twitch", enum=["twitch", "edgelist", "synthetic", "parquet"]),
        "twitch_languages": Param(["DE", "ENGB", "ES", "FR", "PTBR", "RU"], type="array"),
        "edges": Param(
            None, type=["null", "string"], description="edge-list file (dataset=edgelist)"
        ),
        "nodes": Param(None, type=["null", "string"], description="node-attribute CSV (edgelist)"),
        "parquet_dir": Param(
            None, type=["null", "string"], description="contract tables (parquet)"
        ),
        "run_dir": Param("runs/pipeline", type="string", description="the run folder"),
        "online_store": Param(
            "", enum=["", "sqlite", "redis"], description="default: the configured store"
        ),
        "tracking_uri": Param(None, type=["null", "string"], description="default: RUN/mlflow.db"),
        "extra_settings": Param(
            None, type=["null", "array"], description="section.key=value items"
        ),
    },
)
def followrec_features() -> None:
    """Raw graph -> validated feature tables in Feast."""

    chain_steps(FEATURES_STEPS, outlets={"materialize": [FEATURES_ASSET]})


followrec_features()
