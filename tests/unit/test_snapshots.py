"""publish_snapshot: staged folders published together through one link swap."""

from followrec.core.atomic import publish_snapshot


def stage(root, text):
    for name in ("raw", "features"):
        (root / "staged" / name).mkdir(parents=True)
        (root / "staged" / name / "table.txt").write_text(f"{name} {text}")


def test_folders_are_published_together_and_a_re_run_with_nothing_staged_does_nothing(tmp_path):
    stage(tmp_path, "one")
    assert publish_snapshot(tmp_path / "staged", tmp_path, ("raw", "features"))
    assert (tmp_path / "features" / "table.txt").read_text() == "features one"
    assert not (tmp_path / "staged").exists()
    assert publish_snapshot(tmp_path / "staged", tmp_path, ("raw", "features")) is False
    stage(tmp_path, "two")
    first = (tmp_path / "snapshot").resolve()
    publish_snapshot(tmp_path / "staged", tmp_path, ("raw", "features"))
    assert (tmp_path / "raw" / "table.txt").read_text() == "raw two"
    assert (tmp_path / "features" / "table.txt").read_text() == "features two"
    stage(tmp_path, "three")
    publish_snapshot(tmp_path / "staged", tmp_path, ("raw", "features"))
    kept = sorted(p.name for p in (tmp_path / ".snapshots").iterdir())
    assert len(kept) == 2 and first.name not in kept  # current and previous only


def test_a_run_folder_from_before_snapshots_moves_to_links(tmp_path):
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "table.txt").write_text("legacy")
    stage(tmp_path, "new")
    publish_snapshot(tmp_path / "staged", tmp_path, ("raw", "features"))
    assert (tmp_path / "features").is_symlink()
    assert (tmp_path / "features" / "table.txt").read_text() == "features new"
