"""publish_snapshot: staged folders published together through one link swap; files
streamed into place in one rename."""

import pytest

from followrec.core.atomic import atomic_file, publish_snapshot


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


def test_a_streamed_file_replaces_the_old_one_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left
    with atomic_file(target) as fh:
        fh.write(b"new, ")
        fh.write(b"in two writes")
    assert target.read_bytes() == b"new, in two writes"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
