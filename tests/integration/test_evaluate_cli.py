"""`followrec evaluate` end to end: real data, report files, MLflow run, the printed table."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from followrec.cli import main
from followrec.registry.tracking import registry_client

SOURCES = ["popularity", "popularity_segment", "friends_of_friends", "cofollow_cf", "als", "blend"]
METRICS = ["recall", "precision", "map", "ndcg", "hit_rate", "coverage", "popularity_percentile"]


def check_report(out, n_accounts, sources=SOURCES):
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["accounts"] == n_accounts
    assert list(report["sources"]) == sources
    random_recall = 100 / n_accounts
    for name, metrics in report["sources"].items():
        for metric in METRICS:
            for k in (10, 50, 100, 200):
                assert 0 <= metrics[f"{metric}@{k}"] <= 1, (name, metric, k)
        assert metrics["recall@10"] <= metrics["recall@100"] <= metrics["recall@200"]
        # Every narrow source retrieves far better than chance.
        assert metrics["recall@100"] > 3 * random_recall, name
        assert "cold_start=true" in metrics["groups"]
        assert any(g.startswith("activity=") for g in metrics["groups"])
    assert (out / "report.md").read_text().startswith("# followrec offline evaluation")
    assert (out / "recall_at_k.png").stat().st_size > 10_000
    return report


def test_twitch_language_with_two_tower_and_mlflow(tmp_path, capsys):
    out = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(
        ["evaluate", "--dataset", "twitch", "--out", str(out), "--quiet",
         "--set", "data.twitch_languages=[PTBR]", "--set", f"mlflow.tracking_uri={uri}",
         "--set", "train.epochs=3"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| two_tower |" in printed and "report.json" in printed
    report = check_report(out, 1912, SOURCES + ["two_tower", "two_tower_pointwise"])
    assert set(report["sources"]["als"]["groups"]) >= {"language=pt", "cold_start=false"}
    assert len(report["training"]["two_tower"]["history"]) >= 1

    client = registry_client(uri)
    experiment = client.get_experiment_by_name("followrec").experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([experiment])}
    assert set(runs) == {"evaluate-twitch-PTBR", "train-two_tower", "train-two_tower_pointwise"}
    parent = runs["evaluate-twitch-PTBR"]
    assert parent.data.metrics["als.recall_at_100"] == pytest.approx(
        report["sources"]["als"]["recall@100"]
    )
    assert parent.data.params["data.dataset"] == "twitch"
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert names == {"report.json", "report.md", "recall_at_k.png"}
    child = runs["train-two_tower"]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.params["train.objective"] == "in_batch"
    assert child.data.metrics["test_recall_at_100"] == pytest.approx(
        report["sources"]["two_tower"]["recall@100"]
    )
    epochs = client.get_metric_history(child.info.run_id, "val_recall_at_100")
    assert [m.step for m in epochs] == list(range(1, len(epochs) + 1))
    assert "training_two_tower.png" in {a.path for a in client.list_artifacts(child.info.run_id)}

    # Registered as followrec-two-tower, with its tags; loads and serves without pickles.
    version = client.get_model_version("followrec-two-tower", "1")
    assert version.tags["schema_hash"] == report["training"]["two_tower"]["schema_hash"]
    assert float(version.tags["recall_at_100"]) == pytest.approx(
        report["sources"]["two_tower"]["recall@100"]
    )
    assert len(client.search_model_versions("name='followrec-two-tower'")) == 1
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/followrec-two-tower/1")
    assert [c.name for c in model.metadata.get_input_schema().inputs][:2] == ["language", "country"]
    local = mlflow.artifacts.download_artifacts(
        "models:/followrec-two-tower/1", dst_path=str(tmp_path / "download")
    )
    files = [p.name for p in Path(local).rglob("*")]
    assert "state_dict.pt" in files and not any(f.endswith((".pkl", ".pickle")) for f in files)
    example = pd.read_json(Path(local) / "input_example.json", orient="split")
    served = np.stack(model.predict(example)["embedding"].to_numpy())
    direct = torch_embeddings(out / "models" / "two_tower", example)
    # PTBR holds back 10% of its follows for validation: the refit keeps the early towers.
    assert report["training"]["two_tower"]["refit"]["members"] == 2
    assert served.shape == (len(example), 2 * 64)
    assert np.allclose(served, direct, atol=1e-5)
    assert (out / "config.yaml").exists()


def torch_embeddings(model_dir, frame):
    from followrec.training.data import tower_tensors
    from followrec.training.model_io import load_model_dir
    from followrec.training.train import encode

    trained = load_model_dir(model_dir)
    tensors = tower_tensors(
        frame,
        trained.schema["consumer"],
        trained.dense_stats["consumer"],
        trained.train_config["max_history"],
    )
    return encode(trained.model.consumer, tensors).numpy()


def test_edge_list_with_node_attributes(tmp_path, twitch_dir):
    # A user-supplied edge list: RU's edges and attributes rewritten as plain files.
    import pandas as pd

    edges = pd.read_csv(twitch_dir / "RU" / "musae_RU_edges.csv")
    edges.to_csv(tmp_path / "edges.tsv", sep="\t", header=False, index=False)
    target = pd.read_csv(twitch_dir / "RU" / "musae_RU_target.csv")
    nodes = pd.DataFrame(
        {
            "id": target["new_id"],
            "views": target["views"],
            "partner": target["partner"].map({True: "yes", False: "no"}),
            "language": "ru",
        }
    )
    nodes.to_csv(tmp_path / "nodes.csv", index=False)
    # README "Adding a feature": a text and a numeric node attribute named in both towers.
    from followrec.features.spec import DEFAULT_SPEC

    spec = {tower: list(feats) for tower, feats in DEFAULT_SPEC.items()}
    for tower in ("consumer", "producer"):
        spec[tower] += [
            {"name": "partner", "kind": "categorical"},
            {"name": "views", "kind": "dense", "transform": "log1p"},
        ]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    code = main(
        [
            "evaluate",
            "--dataset",
            "edgelist",
            "--edges",
            str(tmp_path / "edges.tsv"),
            "--nodes",
            str(tmp_path / "nodes.csv"),
            "--undirected",
            "--out",
            str(out),
            "--no-mlflow",
            "--quiet",
            "--set",
            "eval.two_tower=[two_tower]",
            "--set",
            "train.epochs=2",
            "--set",
            "train.min_steps=0",
            "--set",
            f"train.spec={tmp_path / 'spec.yaml'}",
            "--set",
            "eval.groups=[partner]",
        ]
    )
    assert code == 0
    report = check_report(out, 4385, SOURCES + ["two_tower"])
    # Fairness by any attribute: recall per consumer group, exposure per account group.
    for source in ("two_tower", "popularity"):
        metrics = report["sources"][source]
        users = [metrics["groups"][f"partner={v}"]["users"] for v in ("no", "yes")]
        assert sum(users) == metrics["users"] and min(users) > 0
        shares = metrics["account_groups"]["partner"]
        assert sum(g["exposure_share"] for g in shares.values()) == pytest.approx(1)
        assert sum(g["follow_share"] for g in shares.values()) == pytest.approx(1)
        assert metrics["max_disparity"] >= 1
    assert (out / "models" / "two_tower" / "state_dict.pt").exists()
    from followrec.training.model_io import load_model_dir

    trained = load_model_dir(out / "models" / "two_tower")
    for tower in ("consumer", "producer"):
        named = {f["name"]: f for f in trained.schema[tower]}
        # yes/no coded with a fitted vocabulary: unknown, "no", "yes"
        assert named["partner"]["cardinality"] == 3
        assert named["views"]["kind"] == "dense"
    assert trained.vocabularies["partner"] == ["<unk>", "no", "yes"]
    # The consumer tower reads the attribute: flipping it moves a user's embedding.
    from followrec.core.config import load_config
    from followrec.features.ingest import load_split_features

    cfg = load_config(out / "config.yaml")
    consumer = load_split_features(cfg, progress=False)[2].consumer.head(4).copy()
    flipped = consumer.copy()
    flipped["partner"] = 3 - flipped["partner"]
    assert not np.allclose(
        torch_embeddings(out / "models" / "two_tower", consumer),
        torch_embeddings(out / "models" / "two_tower", flipped),
    )
    assert report["dataset"]["load.undirected"] is True
    assert report["split"]["kind"] == "random_per_user"


def test_synthetic_graph_uses_a_temporal_split(tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "evaluate",
            "--dataset",
            "synthetic",
            "--out",
            str(out),
            "--no-mlflow",
            "--quiet",
            "--set",
            "synthetic.n_accounts=4000",
            "--set",
            "eval.two_tower=[]",
        ]
    )
    assert code == 0
    report = check_report(out, 4000)
    assert report["split"]["kind"] == "temporal"
    assert report["dataset"]["engagements"] > 0


def test_bad_input_exits_2_naming_file_and_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,1\nb,c,noon\n")
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "followrec",
            "evaluate",
            "--dataset",
            "edgelist",
            "--edges",
            str(bad),
            "--header",
            "no",  # letter ids and no header line: auto would refuse to guess
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert f"{bad}:2: field 'timestamp' value 'noon'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_help_explains_the_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "followrec", "evaluate", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    for words in ("--dataset", "edgelist", "--undirected", "--set", "report.json"):
        assert words in proc.stdout


@pytest.mark.slow
def test_full_twitch_platform(tmp_path):
    out = tmp_path / "twitch"
    assert (
        main(
            [
                "evaluate",
                "--dataset",
                "twitch",
                "--out",
                str(out),
                "--no-mlflow",
                "--quiet",
                "--set",
                "eval.two_tower=[]",
            ]
        )
        == 0
    )
    report = check_report(out, 34_118)
    assert report["split"]["evaluated_users"] > 30_000
    groups = report["sources"]["blend"]["groups"]
    assert {f"language={x}" for x in ("de", "en", "es", "fr", "pt", "ru")} <= set(groups)
