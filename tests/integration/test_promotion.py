"""Registry promotion through the CLI: champion + published index, a weak challenger that is
not promoted, status JSON, and rollback of model and index together."""

import json

from followrec.cli import main
from followrec.core.config import load_config
from followrec.indexing.store import load_published, publish, read_pointer
from followrec.registry import promote as promote_step
from followrec.registry.aliases import CHAMPION, alias_version, record_decision
from followrec.registry.gate import Decision
from followrec.registry.tracking import registry_client

EVALUATE = ["evaluate", "--dataset", "twitch", "--quiet",
            "--set", "data.twitch_languages=[PTBR]", "--set", "eval.two_tower=[two_tower]",
            "--set", "baselines.sources=[popularity]"]  # fmt: skip


def status(run, capsys):
    capsys.readouterr()
    assert main(["status", "--run", str(run), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_promote_reject_weak_challenger_and_roll_back(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["promote", "--run", str(run)]) == 2  # no run here yet
    assert "not a run folder" in capsys.readouterr().err and not run.exists()

    assert main([*EVALUATE, "--out", str(run), "--set", "train.epochs=2"]) == 0
    assert main(["promote", "--run", str(run)]) == 0
    first = status(run, capsys)
    assert str(first["champion"]["version"]) == "1"
    assert first["champion"]["index"]["kind"] == "flat"
    assert first["champion"]["index"]["count"] == 1912
    assert first["champion"]["index"]["ann_recall_at_100"] >= 0.95
    assert first["published_index"]["current"] == "model-v1"
    index, ids, manifest = load_published(run / "indexes")
    assert manifest["schema_hash"] == first["champion"]["schema_hash"]

    # A deliberately weak challenger (one training step) is registered but not promoted.
    assert main([*EVALUATE, "--out", str(run), "--set", "train.max_steps=1"]) == 0
    assert main(["promote", "--run", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "version 2: not promoted" in printed and "does not beat champion" in printed
    second = status(run, capsys)
    assert str(second["champion"]["version"]) == "1"
    assert read_pointer(run / "indexes")["current"] == "model-v1"
    decisions = {str(v["version"]): v["decision"] for v in second["versions"]}
    assert decisions == {"1": "promoted", "2": "rejected"}
    assert not (run / "indexes" / "model-v2").exists()  # rejected at the gate: no index work

    # Force version 2 in, then roll back: model alias and index move back together.
    gated = json.loads((run / "gate.json").read_text())
    (run / "gate.json").write_text(json.dumps({**gated, "passed": True}))
    promote_step.build_index(load_config(run / "config.yaml"), run, progress=False)
    client = registry_client(f"sqlite:///{run / 'mlflow.db'}")
    record_decision(client, "2", Decision(True, ["forced for the test"]), "model-v2")
    publish(run / "indexes", "model-v2")
    assert str(alias_version(client, CHAMPION).version) == "2"
    assert main(["rollback", "--run", str(run)]) == 0
    assert str(alias_version(client, CHAMPION).version) == "1"
    assert read_pointer(run / "indexes")["current"] == "model-v1"
    assert main(["rollback", "--run", str(run)]) == 2  # nothing further back

    # Another host with no index copies: the champion's index comes from its registry artifacts.
    moved = run / "indexes-elsewhere"
    (run / "indexes").rename(moved)
    third = status(run, capsys)
    assert third["champion"]["index"]["version"] == "model-v1"
    for name in ("index.faiss", "manifest.json", "account_ids.npy"):
        fetched = run / "indexes" / "model-v1" / name
        assert fetched.read_bytes() == (moved / "model-v1" / name).read_bytes()
