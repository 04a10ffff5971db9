"""DagBag integrity: imports, no cycles, docs, tags, retries, and each task is a CLI step."""

import textwrap

from followrec import pipeline
from followrec.cli import build_parser
from followrec.step_names import ALL_STEPS, FEATURES_STEPS, REFRESH_STEPS, TRAINING_STEPS
from tests.dags.conftest import DAGS, run_python

LOAD = textwrap.dedent(f"""
    import json
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag({str(DAGS)!r})
    out = {{"errors": {{k: str(v) for k, v in bag.import_errors.items()}}, "dags": {{}}}}
    for dag_id, dag in bag.dags.items():
        dag.check_cycle() if hasattr(dag, "check_cycle") else None
        out["dags"][dag_id] = {{
            "tags": sorted(dag.tags), "doc": bool(dag.doc_md),
            "params": sorted(dag.params.keys()),
            "tasks": {{t.task_id: t.retries for t in dag.tasks}},
            "order": [t.task_id for t in dag.topological_sort()]
                     if hasattr(dag, "topological_sort") else None,
        }}
    print(json.dumps(out))
""")


def test_dags_import_cleanly_with_docs_tags_retries_and_cli_steps(airflow_env):
    bag = run_python(airflow_env, LOAD)
    assert bag["errors"] == {}
    assert {"followrec_features", "followrec_training", "followrec_index_refresh"} <= set(
        bag["dags"]
    )
    parser = build_parser()
    for dag_id, info in bag["dags"].items():
        assert info["doc"], dag_id
        assert "followrec" in info["tags"], dag_id
        for task_id, retries in info["tasks"].items():
            assert retries >= 1, (dag_id, task_id)
            # `followrec step TASK` runs the same step function as the task.
            args = parser.parse_args(["step", task_id, "--run", "RUN"])
            assert (args.command, args.name) == ("step", task_id)
    training = bag["dags"]["followrec_training"]
    assert {"run_dir", "epochs", "floor_recall_at_100", "target_ann_recall"} <= set(
        training["params"]
    )
    assert tuple(pipeline.STEPS) == ALL_STEPS  # the registry and the DAGs list the same steps
    assert training["order"] == list(TRAINING_STEPS)
    assert bag["dags"]["followrec_features"]["order"] == list(FEATURES_STEPS)
    assert bag["dags"]["followrec_index_refresh"]["order"] == list(REFRESH_STEPS)
