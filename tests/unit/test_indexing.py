"""Index factory, tuning to a target recall, manifests, atomic publish and rollback."""

import numpy as np
import pytest

from followrec.core.errors import InputError
from followrec.indexing.factory import build, build_tuned, choose, recall_against_exact
from followrec.indexing.store import load_published, publish, read_pointer, rollback, write_version


def clustered(n, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim))
    x = centres[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_factory_picks_by_corpus_size():
    assert choose(10_000).kind == "flat"
    assert choose(1_000_000).kind == "hnsw"
    assert choose(5_000_000).kind == "ivf"
    assert choose(10, "ivf").params["nlist"] >= 1
    with pytest.raises(InputError, match="index.kind"):
        choose(10, "annoy")


@pytest.mark.parametrize("kind", ["hnsw", "faiss_hnsw", "ivf"])
def test_tuning_reaches_the_target_recall(kind):
    items, queries = clustered(20_000), clustered(200, seed=1)
    index, choice, recall = build_tuned(items, queries, 0.95, k=100, kind=kind)
    assert choice.kind == kind
    assert recall >= 0.95
    assert recall == pytest.approx(recall_against_exact(index, items, queries, 100))
    assert ("nprobe" if kind == "ivf" else "ef_search") in choice.params


def test_an_hnsw_graph_round_trips_through_the_store_with_its_search_effort(tmp_path):
    items, queries = clustered(5_000), clustered(50, seed=3)
    index, choice, _ = build_tuned(items, queries, 0.95, k=100, kind="hnsw")
    write_version(tmp_path, "model-v1", index, np.arange(5_000) + 7, {"params": choice.params})
    publish(tmp_path, "model-v1")
    loaded, ids, manifest = load_published(tmp_path)
    assert manifest["file"] == "index.hnsw" and loaded.ntotal == 5_000 and loaded.d == 32
    assert loaded.ef == choice.params["ef_search"]
    assert np.array_equal(loaded.search(queries, 100)[1], index.search(queries, 100)[1])
    assert np.allclose(loaded.reconstruct_n(0, 3), items[:3], atol=1e-6)


def test_exact_index_has_recall_one():
    items, queries = clustered(500), clustered(20, seed=2)
    index, choice, recall = build_tuned(items, queries, 0.99)
    assert choice.kind == "flat" and recall == 1.0


def test_versions_publish_atomically_and_roll_back(tmp_path):
    items = clustered(300)
    for version in ("model-v1", "model-v2"):
        write_version(
            tmp_path,
            version,
            build(choose(300), items),
            np.arange(300),
            {"schema_hash": "abc", "ann_recall_at_100": 1.0},
        )
    assert read_pointer(tmp_path) is None  # written is not published
    publish(tmp_path, "model-v1")
    publish(tmp_path, "model-v2")
    index, ids, manifest = load_published(tmp_path)
    assert manifest["version"] == "model-v2" and manifest["count"] == 300
    assert index.ntotal == 300 and ids.tolist() == list(range(300))
    assert rollback(tmp_path) == "model-v1"
    assert load_published(tmp_path)[2]["version"] == "model-v1"
    with pytest.raises(InputError, match="no previous index"):
        rollback(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_tampered_index_is_refused(tmp_path):
    write_version(tmp_path, "model-v1", build(choose(100), clustered(100)), np.arange(100), {})
    publish(tmp_path, "model-v1")
    (tmp_path / "model-v1" / "index.faiss").write_bytes(b"corrupt")
    with pytest.raises(InputError, match="checksum"):
        load_published(tmp_path)


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises(TypeError):  # not a FAISS index: fails half-way through the write
        write_version(tmp_path, "model-v1", object(), np.arange(3), {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["../model-v1", "model-v1/../../etc", "model-v1x", "model-v1-refresh-a/b", "", "v1"]
)
def test_version_names_are_checked_before_any_path_is_made(tmp_path, name):
    index = build(choose(50), clustered(50))
    with pytest.raises(InputError, match="not an index version name"):
        write_version(tmp_path / "indexes", name, index, np.arange(50), {})
    assert not (tmp_path / "indexes").exists() or not any((tmp_path / "indexes").iterdir())


def test_a_pointer_or_manifest_naming_a_path_is_refused(tmp_path):
    import json

    root = tmp_path / "indexes"
    write_version(root, "model-v1", build(choose(50), clustered(50)), np.arange(50), {})
    publish(root, "model-v1")
    (root / "CURRENT.json").write_text(json.dumps({"current": "../../x", "history": []}))
    with pytest.raises(InputError, match="not an index version name"):
        load_published(root)
    publish_again = {"current": "model-v1", "history": []}
    (root / "CURRENT.json").write_text(json.dumps(publish_again))
    manifest = json.loads((root / "model-v1" / "manifest.json").read_text())
    (root / "model-v1" / "manifest.json").write_text(
        json.dumps({**manifest, "file": "../../etc/passwd"})
    )
    with pytest.raises(InputError, match="unknown index file"):
        load_published(root)
    # A version folder that is a link out of the root is refused too.
    (root / "model-v1").rename(tmp_path / "elsewhere")
    (root / "model-v1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="outside the index root"):
        load_published(root)
