"""An HNSW graph from the `hnswlib` library behind the same interface as a FAISS index
(search, ntotal, d, reconstruct_n). The ANN benchmark (benchmarks/ann.py) found it faster
per single query than FAISS's IndexHNSWFlat at equal recall, so the factory builds it for
large catalogues."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILE = "index.hnsw"


class HnswGraph:
    """Inner-product HNSW over rows 0..n-1; scores are inner products, like FAISS's."""

    def __init__(self, graph) -> None:  # noqa: ANN001 - an hnswlib.Index
        self.graph = graph

    @classmethod
    def build(cls, vectors: np.ndarray, m: int, ef_construction: int, threads: int = 0):  # noqa: ANN206
        """Insert every row (all cores unless `threads` is set)."""
        import hnswlib

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        graph = hnswlib.Index(space="ip", dim=vectors.shape[1])
        graph.init_index(max_elements=max(len(vectors), 1), M=m, ef_construction=ef_construction)
        if threads:
            graph.set_num_threads(threads)
        if len(vectors):
            graph.add_items(vectors, np.arange(len(vectors)))
        graph.set_num_threads(1)  # a serving worker answers one query per thread
        return cls(graph)

    @classmethod
    def load(cls, path: str | Path, dim: int):  # noqa: ANN206
        import hnswlib

        graph = hnswlib.Index(space="ip", dim=dim)
        graph.load_index(str(path))
        graph.set_num_threads(1)
        return cls(graph)

    def save(self, path: str | Path) -> None:
        self.graph.save_index(str(path))

    @property
    def ntotal(self) -> int:
        return int(self.graph.get_current_count())

    @property
    def d(self) -> int:
        return int(self.graph.dim)

    @property
    def ef(self) -> int:
        return int(self.graph.ef)

    def set_ef(self, ef: int) -> None:
        self.graph.set_ef(ef)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) best first, like faiss.Index.search; ef is raised to k if lower."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.ntotal)
        if self.graph.ef < k:
            self.graph.set_ef(k)
        rows, distances = self.graph.knn_query(queries, k=k)
        return (1.0 - distances).astype(np.float32), rows.astype(np.int64)

    def reconstruct_n(self, start: int, count: int) -> np.ndarray:
        return self.reconstruct_batch(np.arange(start, start + count))

    def reconstruct_batch(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.graph.get_items(np.asarray(rows).tolist()), dtype=np.float32)
