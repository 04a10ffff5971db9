"""Property-based tests (hypothesis): the edge-list loader on any graph and any text,
sorted_unique against np.unique, the exclusion-aware searches (batch and the service's one
query) against brute force, and the HTTP request models on any JSON."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from followrec.core.errors import InputError
from followrec.core.search import exclusions, search_excluding, sorted_unique
from followrec.features.loaders import load_edgelist
from followrec.serving.app import MAX_EXCERPT, Event, Profile, excerpt
from followrec.serving.candidates import AccountRows, search_one_excluding

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
edges = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=60)


@FAST
@given(values=st.lists(st.integers(-(2**62), 2**62) | st.integers(0, 5), max_size=50))
def test_sorted_unique_is_np_unique(values):
    array = np.array(values, dtype=np.int64)
    found = sorted_unique(array)
    assert found.dtype == np.int64
    np.testing.assert_array_equal(found, np.unique(array))


@FAST
@given(pairs=edges, undirected=st.booleans(), header=st.booleans())
def test_any_edge_list_loads_as_its_distinct_non_self_follows(
    tmp_path_factory, pairs, undirected, header
):
    path = tmp_path_factory.mktemp("edges") / "e.csv"
    path.write_text(("from,to\n" if header else "") + "".join(f"{a},{b}\n" for a, b in pairs))
    expected = {(a, b) for a, b in pairs if a != b}
    if undirected:
        expected |= {(b, a) for a, b in expected}
    if not expected:
        with pytest.raises(InputError):
            load_edgelist(path, undirected=undirected)
        return
    ds = load_edgelist(path, undirected=undirected)
    ids = ds.accounts["external_id"].to_numpy()
    loaded = {
        (int(ids[f]), int(ids[t]))
        for f, t in zip(ds.follows["follower_id"], ds.follows["followee_id"], strict=True)
    }
    assert loaded == expected
    assert len(ds.follows) == len(expected)  # no duplicates
    assert ds.load_report["header"] is header


@FAST
@given(text=st.text(max_size=300))
def test_any_text_either_loads_or_is_an_input_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("text") / "e.csv"
    path.write_text(text)
    for header in ("auto", "no"):
        try:
            ds = load_edgelist(path, header=header)
        except InputError as exc:
            assert exc.path == str(path)
        else:
            assert len(ds.follows) >= 1


def exact_top(queries: np.ndarray, items: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and rows of each query's `depth` best items, by brute force."""
    scores = queries @ items.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return np.take_along_axis(scores, order, axis=1), order


def best_allowed(query: np.ndarray, items: np.ndarray, allowed: list[int], k: int) -> list[int]:
    """The k best allowed item rows for one query (ties by row), by brute force."""
    return sorted(allowed, key=lambda j: (-float(query @ items[j]), j))[:k]


@FAST
@given(
    seed=st.integers(0, 10_000),
    n_items=st.integers(1, 40),
    n_users=st.integers(1, 8),
    k=st.integers(1, 45),
    density=st.floats(0, 0.9),
)
def test_search_excluding_equals_brute_force(seed, n_items, n_users, k, density):
    rng = np.random.default_rng(seed)
    queries = rng.normal(size=(n_users, 4)).astype(np.float32)
    items = rng.normal(size=(n_items, 4)).astype(np.float32)
    follows = sp.csr_matrix(rng.random((max(n_users, n_items), n_items)) < density)
    users = rng.integers(0, min(n_users, n_items), n_users)

    def exact(q, depth):
        return exact_top(q, items, depth)

    rows, scores = search_excluding(exact, queries, exclusions(follows, users), k, n_items)
    for i, user in enumerate(users):
        allowed = [j for j in range(n_items) if j != user and not follows[user, j]]
        best = best_allowed(queries[i], items, allowed, k)
        got = [int(r) for r in rows[i] if r >= 0]
        assert got == best
        assert (rows[i][len(best) :] == -1).all() and np.isneginf(scores[i][len(best) :]).all()


class ShallowIndex:
    """Exact scores, but like an approximate index it fills only half the slots asked for
    (the rest -1) until asked for everything, so the caller must search deeper."""

    def __init__(self, items: np.ndarray) -> None:
        self.items, self.ntotal = items, len(items)

    def search(self, query: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        found = exact_top(query, self.items, depth)
        if depth < self.ntotal:
            found[0][:, (depth + 1) // 2 :], found[1][:, (depth + 1) // 2 :] = -np.inf, -1
        return found


@FAST
@given(
    seed=st.integers(0, 10_000),
    n_items=st.integers(1, 40),
    want=st.integers(1, 45),
    n_excluded=st.integers(0, 50),
    shallow=st.booleans(),
)
def test_one_query_search_excluding_equals_brute_force(seed, n_items, want, n_excluded, shallow):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(n_items, 4)).astype(np.float32)
    query = rng.normal(size=(1, 4)).astype(np.float32)
    # Account ids are not row numbers: shuffled, with gaps; some excluded ids are not indexed.
    account_ids = rng.choice(3 * n_items, n_items, replace=False)
    excluded = {int(a) for a in rng.integers(0, 3 * n_items, n_excluded)}
    index = ShallowIndex(items) if shallow else _exact_index(items)
    pair = type("P", (), {"index": index, "rows": AccountRows(account_ids)})()

    rows, scores = search_one_excluding(pair, query, want, excluded)
    allowed = [j for j in range(n_items) if int(account_ids[j]) not in excluded]
    best = best_allowed(query[0], items, allowed, want)
    assert sorted(rows.tolist()) == sorted(best)  # ties may come in either order
    expected = np.sort(query[0] @ items[best].T)[::-1]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)  # summation order


def _exact_index(items: np.ndarray):  # noqa: ANN202 - a FAISS index
    import faiss

    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    return index


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
profile_like = st.fixed_dictionaries(
    {},
    optional={
        "user_id": json_values | st.integers(-5, 2**63),
        "language": json_values,
        "interests": st.lists(st.integers(-3, 2**63), max_size=5) | json_values,
        "follows": st.lists(st.integers(-3, 50), max_size=5) | json_values,
        "k": st.integers(-5, 5000) | json_values,
        "diversity": st.floats() | json_values,
    },
)


@FAST
@given(body=profile_like | st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_request_models_accept_or_reject_any_json_without_surprises(body):
    for model in (Profile, Event):
        try:
            parsed = model.model_validate(body)
        except pydantic.ValidationError as exc:
            for error in exc.errors():
                assert len(str(excerpt(error.get("input")))) <= MAX_EXCERPT + 20
        else:
            again = model.model_validate(parsed.model_dump())
            assert again == parsed
            if model is Profile:
                assert 1 <= parsed.k <= 1000 and 0 <= parsed.diversity <= 1
                assert all(0 <= a <= 2**62 for a in parsed.follows or [])
