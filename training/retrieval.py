"""The retrieval wrapper: consumer tower + a FAISS inner-product index over producers."""

from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np
import scipy.sparse as sp
import torch

from followrec.core.search import exclusions, search_excluding
from followrec.features.contract import Dataset
from followrec.features.split import Split
from followrec.features.transforms import FeatureTables, follow_matrix
from followrec.training.train import TrainedModel, encode


@dataclass
class Retriever:
    """Encodes users with the consumer tower and searches producer embeddings."""

    trained: TrainedModel
    index: faiss.Index
    consumer_tensors: object
    follows: sp.csr_matrix  # user x account, what each user already follows
    items: np.ndarray  # producer embeddings, row = account id

    @classmethod
    def build(
        cls, trained: TrainedModel, tables: FeatureTables, follows: sp.csr_matrix, threads: int = 2
    ) -> Retriever:
        """Encode every producer into an exact inner-product index."""
        faiss.omp_set_num_threads(threads)
        consumer_t, producer_t = trained.tensors(tables)
        items = encode(trained.model.producer, producer_t).numpy().astype(np.float32)
        index = faiss.IndexFlatIP(items.shape[1])
        index.add(items)
        return cls(
            trained=trained, index=index, consumer_tensors=consumer_t, follows=follows, items=items
        )

    def recommend(self, users: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
        """Top k accounts per user, excluding the user and what they follow (-1 padded)."""
        user_emb = encode(self.trained.model.consumer, self.consumer_tensors, users).numpy()
        degree = np.diff(self.follows.indptr)[users]
        order = np.argsort(degree, kind="stable")  # similar search depth per chunk
        out = np.full((len(users), k), -1, dtype=np.int64)
        for lo in range(0, len(users), chunk):
            rows = order[lo : lo + chunk]
            out[rows] = search_excluding(
                self.index.search,
                user_emb[rows],
                exclusions(self.follows, users[rows]),
                k,
                self.index.ntotal,
            )[0]
        return out

    def rerank(self, users: np.ndarray, recs: np.ndarray) -> np.ndarray:
        """Re-order each user's candidates by the interaction head instead of the dot
        product (ranking studies; the head cannot drive ANN search)."""
        model = self.trained.model
        user_emb = encode(model.consumer, self.consumer_tensors, users)
        cand = torch.from_numpy(self.items[np.maximum(recs, 0)])  # users x k x d
        expanded = user_emb.unsqueeze(1).expand_as(cand)
        with torch.no_grad():
            scores = model.interaction_score(
                expanded.reshape(-1, cand.shape[2]), cand.reshape(-1, cand.shape[2])
            )
        scores = scores.view(recs.shape).numpy()
        scores[recs < 0] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(recs, order, axis=1)


def two_tower_recommendations(
    trained: TrainedModel,
    ds: Dataset,
    split: Split,
    users: np.ndarray,
    k: int,
    tables: FeatureTables,
) -> tuple[dict[str, np.ndarray], float]:
    """Recommendations for `users` from the feature tables of all training follows
    (`retrieval`, and `rerank` when the model has an interaction head), and the seconds spent
    encoding and searching."""
    started = time.perf_counter()
    follows = follow_matrix(split.train, ds.n_accounts)
    with torch.no_grad():
        retriever = Retriever.build(trained, tables, follows)
        recs = {"retrieval": retriever.recommend(users, k)}
        if trained.model.interaction is not None:
            recs["rerank"] = retriever.rerank(users, recs["retrieval"])
    return recs, time.perf_counter() - started
