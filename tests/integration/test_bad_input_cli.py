"""Bad input through the CLI: exit 2 with a message naming the file, line, field or value;
never a traceback, and nothing written where the command failed."""

from __future__ import annotations

import pytest

from followrec.cli import main


def edges(tmp_path, text, name="edges.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def files_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*")) if path.exists() else []


def run_cli(argv, capsys):
    """Exit status and stderr of `followrec ARGV` (argparse's usage errors included)."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


GRAPH = "".join(f"{i},{(i * 7 + 1) % 40},{1_600_000_000 + i}\n" for i in range(40))


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("folder", "is a folder, not a file"),
        ("huge_timestamp", "edges.csv:3: field 'timestamp' value '1e30': out of range"),
        ("unknown_header", "edges.csv:1: field 'header' value 'från,till'"),
        ("repeated_header", "edges.csv:4: field 'header'"),
        ("binary", "a binary file"),
    ],
)
def test_evaluate_bad_edge_files_exit_2_naming_the_place_and_write_nothing(
    tmp_path, capsys, case, expect
):
    path = {
        "folder": lambda: tmp_path,
        "huge_timestamp": lambda: edges(tmp_path, "1,2,5\n2,3,6\n3,4,1e30\n"),
        "unknown_header": lambda: edges(tmp_path, "från,till\nanna,bo\nbo,cai\n"),
        "repeated_header": lambda: edges(tmp_path, "from,to\n1,2\n2,3\nfrom,to\n3,4\n"),
        "binary": lambda: edges(tmp_path, "1,2\n") and _binary(tmp_path / "edges.csv"),
    }[case]()
    out = tmp_path / "out"
    status, err = run_cli(
        ["evaluate", "--dataset", "edgelist", "--edges", path, "--out", out], capsys
    )
    assert status == 2, err
    assert expect in err
    assert "Traceback" not in err
    assert not out.exists()


def _binary(path):
    path.write_bytes(b"1,2\n\x00\x01\x02\n")
    return path


def test_out_pointing_at_a_file_is_named(tmp_path, capsys):
    taken = edges(tmp_path, "x", name="taken")
    status, err = run_cli(
        ["evaluate", "--dataset", "edgelist", "--edges", edges(tmp_path, GRAPH), "--out", taken],
        capsys,
    )
    assert status == 2 and "field '--out'" in err and "exists and is not a folder" in err
    assert taken.read_text() == "x"


def test_a_bad_spec_found_during_training_leaves_no_output_folder(tmp_path, capsys):
    text = "consumer:\n  - {name: home_city, kind: categorical}\nproducer:\n"
    text += "  - {name: follower_count, kind: dense}\n"
    spec = edges(tmp_path, text, "spec.yaml")
    out = tmp_path / "out"
    argv = ["evaluate", "--dataset", "edgelist", "--edges", edges(tmp_path, GRAPH)]
    argv += ["--out", out, "--no-mlflow", "--set", f"train.spec={spec}", "--quiet"]
    argv += ["--set", "eval.two_tower=[two_tower]", "--set", "baselines.sources=[popularity]"]
    status, err = run_cli(argv, capsys)
    assert status == 2 and "home_city" in err
    assert not out.exists(), files_under(out)


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--user", "99999999999999999999"], "argument --user: 99999999999999999999 is outside"),
        (["--user", "-1"], "argument --user: -1 is outside"),
        (["--user", "1", "--k", "0"], "argument --k: 0 is outside 1..1000"),
        (["--user", "1", "--k", "ten"], "argument --k: 'ten' is not int"),
        (["--user", "1", "--diversity", "nan"], "argument --diversity: 'nan' is not a number"),
    ],
)
def test_recommend_arguments_are_checked_before_anything_loads(tmp_path, capsys, argv, expect):
    run = tmp_path / "missing-run"
    status, err = run_cli(["recommend", "--run", run, *argv], capsys)
    assert status == 2 and expect in err
    assert not run.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["rollback"],
        ["promote"],
        ["recommend", "--user", "0"],
        ["serving-report"],
        ["training"],
        ["step", "train"],
    ],
)
def test_commands_that_read_a_run_create_nothing_where_there_is_none(tmp_path, capsys, argv):
    run = tmp_path / "typo"
    status, err = run_cli([*argv, "--run", run], capsys)
    assert status == 2, err
    assert "field '--run'" in err and "not a run folder" in err
    assert not run.exists()


def test_serve_beyond_loopback_without_a_key_is_refused_before_loading(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("FOLLOWREC_API_KEY", raising=False)
    monkeypatch.delenv("FOLLOWREC_SECRETS_FILE", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    status, err = run_cli(["serve", "--run", run, "--host", "0.0.0.0"], capsys)
    assert status == 2 and "field '--host' value '0.0.0.0'" in err and "API key" in err
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
