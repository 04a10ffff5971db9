"""One index factory: exact, HNSW or IVF by corpus size, tuned to a target ANN recall.

The defaults come from benchmarks/ann.py at 1M producers, 64-d, 2 cores. Exact search
answers ~40-100 single queries/s at 1M and ~2,000/s at 50k, so exact up to 50k. Above, an
hnswlib graph (single queries ~1.5x faster than FAISS's IndexHNSWFlat at equal recall,
2026-11-24). Its build settings come from the learned embeddings of the 1M pipeline run
(2026-11-26), where users' vectors sit far from the accounts' (top score ~0.53, 200
accounts within 0.02 of the 100th): M=16 / efConstruction 80 needed efSearch 768 for
Recall@100 0.967 (1,648 q/s); M=32 / 200 reached 0.960 at ef 384 (2,691 q/s); M=48 / 200
0.960 at ef 256 (3,621 q/s) in about the same build time (148 s on 2 cores). IVF-Flat
needed nprobe 128 of 4096 lists for 0.98 (717 q/s) and stays for catalogues beyond 2M,
where graph memory and build time grow; IVF-PQ, fast-scan PQ with re-ranking and scann's
anisotropic quantization stopped short of 0.95 or were slower there."""

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
HNSW_M, HNSW_EF_CONSTRUCTION = 48, 200
# efSearch tried in turn until the target recall; below k=100 it would return fewer.
HNSW_EF = (100, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 1024)


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
