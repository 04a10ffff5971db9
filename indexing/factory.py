"""One index factory: exact, HNSW or IVF by corpus size, tuned to a target ANN recall."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from followrec.errors import InputError

KINDS = ("auto", "flat", "hnsw", "ivf")
EXACT_UP_TO = 50_000  # below this, exact search is fast enough and always right
HNSW_UP_TO = 2_000_000  # above this, IVF's smaller memory and build time win
HNSW_EF = (32, 64, 128, 256, 512, 1024)


@dataclass
class IndexChoice:
    """Which index and its build/search parameters."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)


def choose(n: int, kind: str = "auto") -> IndexChoice:
    """Pick an index kind for a corpus of n vectors (or honour an explicit kind)."""
    if kind not in KINDS:
        raise InputError(f"expected one of {', '.join(KINDS)}", field="index.kind", value=kind)
    if kind == "auto":
        kind = "flat" if n <= EXACT_UP_TO else ("hnsw" if n <= HNSW_UP_TO else "ivf")
    if kind == "hnsw":
        return IndexChoice("hnsw", {"M": 32, "ef_construction": 80})
    if kind == "ivf":
        return IndexChoice("ivf", {"nlist": max(1, min(int(4 * math.sqrt(n)), n // 39))})
    return IndexChoice("flat", {})


def build(choice: IndexChoice, vectors: np.ndarray) -> faiss.Index:
    """Build an inner-product index over float32 vectors."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if choice.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, choice.params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = choice.params["ef_construction"]
    elif choice.kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(
            quantizer, dim, choice.params["nlist"], faiss.METRIC_INNER_PRODUCT
        )
        index.train(vectors)
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    return index


def set_search_effort(index: faiss.Index, choice: IndexChoice, value: int) -> None:
    """efSearch for HNSW, nprobe for IVF; exact search has no knob."""
    if choice.kind == "hnsw":
        index.hnsw.efSearch = value
        choice.params["ef_search"] = value
    elif choice.kind == "ivf":
        index.nprobe = value
        choice.params["nprobe"] = value


def recall_against_exact(
    index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int
) -> float:
    """Share of the exact top k that the index also returns, over the queries."""
    k = min(k, len(vectors))
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
    _, truth = exact.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    hits = sum(len(np.intersect1d(t, f)) for t, f in zip(truth, found))
    return hits / (k * len(queries))


def build_tuned(
    vectors: np.ndarray, queries: np.ndarray, target_recall: float, k: int = 100, kind: str = "auto"
) -> tuple[faiss.Index, IndexChoice, float]:
    """Build the chosen index and raise its search effort until Recall@k against exact
    search on `queries` reaches the target (or the largest setting is reached)."""
    if not 0 < target_recall <= 1:
        raise InputError("must be in (0, 1]", field="index.target_recall", value=target_recall)
    choice = choose(len(vectors), kind)
    index = build(choice, vectors)
    if choice.kind == "flat":
        return index, choice, 1.0
    efforts = HNSW_EF if choice.kind == "hnsw" else _nprobes(choice.params["nlist"])
    recall = 0.0
    for value in efforts:
        set_search_effort(index, choice, max(value, k) if choice.kind == "hnsw" else value)
        recall = recall_against_exact(index, vectors, queries, k)
        if recall >= target_recall:
            break
    return index, choice, recall


def _nprobes(nlist: int) -> list[int]:
    values, p = [], 1
    while p < nlist:
        values.append(p)
        p *= 2
    return [*values, nlist]
