"""One index factory: exact, HNSW or IVF by corpus size, tuned to a target ANN recall.

The defaults come from benchmarks/ann.py (1M producers, 64-d, 2 cores, 2026-11-24): exact
search answers ~100 single queries/s at 1M and ~2,000/s at 50k, so exact up to 50k; above,
an HNSW graph with M=16 (M=32 was slower at every recall) reaches Recall@100 >= 0.95 from
efSearch 100, and hnswlib's graph answered single queries ~1.5x faster than FAISS's
IndexHNSWFlat at equal recall, so `hnsw` builds an hnswlib graph and `faiss_hnsw` the FAISS
one; IVF-Flat needed nprobe 64 of 4096 lists for 0.96 (2.6x slower than HNSW) and stays for
catalogues beyond 2M where graph memory and build time grow; IVF-PQ did not reach 0.95."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from followrec.core.errors import InputError
from followrec.indexing.hnsw_graph import HnswGraph

KINDS = ("auto", "flat", "hnsw", "faiss_hnsw", "ivf")
EXACT_UP_TO = 50_000  # below this, exact search is fast enough and always right
HNSW_UP_TO = 2_000_000  # above this, IVF's smaller memory and build time win
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 80
HNSW_EF = (100, 128, 192, 256, 384, 512, 1024)  # efSearch below k=100 would return fewer


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
    if kind in ("hnsw", "faiss_hnsw"):
        return IndexChoice(kind, {"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION})
    if kind == "ivf":
        return IndexChoice("ivf", {"nlist": max(1, min(int(4 * math.sqrt(n)), n // 39))})
    return IndexChoice("flat", {})


def build(choice: IndexChoice, vectors: np.ndarray) -> faiss.Index:
    """Build an inner-product index over float32 vectors."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if choice.kind == "hnsw":
        return HnswGraph.build(vectors, choice.params["M"], choice.params["ef_construction"])
    if choice.kind == "faiss_hnsw":
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
        index.set_ef(value)
        choice.params["ef_search"] = value
    elif choice.kind == "faiss_hnsw":
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
    graph = choice.kind in ("hnsw", "faiss_hnsw")
    efforts = HNSW_EF if graph else _nprobes(choice.params["nlist"])
    recall = 0.0
    for value in efforts:
        set_search_effort(index, choice, max(value, k) if graph else value)
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
