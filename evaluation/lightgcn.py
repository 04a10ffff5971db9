"""LightGCN (He et al. 2020) with BPR loss, the graph collaborative-filtering peer, built on
torch_geometric's LightGCN on the training follows.

Followers and followees are separate nodes (user u is node u, account v is node n + v), so a
held-out follow u -> v cannot reach the model through its reverse v -> u of a mutual graph:
that edge joins node v to node n + u, not u to n + v. The best epoch on a validation slice of
the training follows is kept; it is only looked for after `lightgcn_min_epochs`, as BPR
recall stays flat for the first few hundred steps."""

from __future__ import annotations

import copy
import logging

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

from followrec.core.config import BaselineConfig
from followrec.core.search import exclusions, search_excluding, sorted_unique

log = logging.getLogger(__name__)
SCORE_CHUNK = 2048  # users scored at a time (chunk x accounts floats)


def _adjacency(follows: sp.csr_matrix) -> torch.Tensor:
    """The symmetric-normalised adjacency D^-1/2 A D^-1/2 of the bipartite graph (both
    directions of every follower node - followee node edge), as a sparse CSR tensor: one
    sparse product per layer is ~8x faster than message passing over an edge list."""
    import warnings

    from torch_geometric.nn.conv.gcn_conv import gcn_norm
    from torch_geometric.utils import to_torch_csr_tensor

    n = follows.shape[0]
    coo = follows.tocoo()
    users = torch.from_numpy(coo.row.astype(np.int64))
    items = torch.from_numpy(coo.col.astype(np.int64)) + n
    edge_index = torch.stack([torch.cat([users, items]), torch.cat([items, users])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        adjacency = to_torch_csr_tensor(edge_index, size=(2 * n, 2 * n))
        normalized = gcn_norm(adjacency, add_self_loops=False)
    return normalized[0] if isinstance(normalized, tuple) else normalized


def _top_k(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    users: np.ndarray,
    follows: sp.csr_matrix,
    k: int,
) -> np.ndarray:
    """Exact inner-product top k per user, never the user or what they follow (the
    project's one exclusion-aware search)."""

    def search(queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        top = torch.topk(torch.from_numpy(queries) @ item_emb.T, depth, dim=1)
        return top.values.numpy(), top.indices.numpy()

    out = np.empty((len(users), k), dtype=np.int64)
    for lo in range(0, len(users), SCORE_CHUNK):
        u = users[lo : lo + SCORE_CHUNK]
        queries = user_emb[torch.from_numpy(u)].numpy()
        out[lo : lo + len(u)] = search_excluding(
            search, queries, exclusions(follows, u), k, len(item_emb)
        )[0]
    return out


def _recall(recs: np.ndarray, users: np.ndarray, truth: sp.csr_matrix) -> float:
    hits = truth[users[:, None], np.maximum(recs, 0)].toarray() * (recs >= 0)
    wanted = np.maximum(np.asarray(truth[users].sum(axis=1)).ravel(), 1)
    return float((hits.sum(axis=1) / np.minimum(wanted, recs.shape[1])).mean())


def _split_validation(
    follows: sp.csr_matrix, fraction: float, users: int, seed: int
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """(fit follows, validation follows, validation users): a seeded slice of the follows
    of users with at least two, at most `users` of them."""
    rng = np.random.default_rng(seed)
    coo = follows.tocoo()
    degree = np.diff(follows.indptr)
    eligible = np.flatnonzero(degree >= 2)
    chosen = np.sort(rng.choice(eligible, size=min(users, len(eligible)), replace=False))
    pick = np.isin(coo.row, chosen) & (rng.random(len(coo.row)) < fraction)
    shape = follows.shape
    val = sp.csr_matrix((coo.data[pick], (coo.row[pick], coo.col[pick])), shape=shape)
    fit = sp.csr_matrix((coo.data[~pick], (coo.row[~pick], coo.col[~pick])), shape=shape)
    val_users = sorted_unique(coo.row[pick])
    return fit, val, val_users


def fit_lightgcn(
    follows: sp.csr_matrix, cfg: BaselineConfig, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(follower embeddings, followee embeddings) of a LightGCN trained with BPR on
    `follows` (user x account, binary)."""
    from torch_geometric.nn.models import LightGCN

    n = follows.shape[0]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.lightgcn_threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    try:
        fit, val, val_users = _split_validation(follows, 0.1, 2000, cfg.seed)
        adjacency = _adjacency(fit)
        coo = fit.tocoo()
        pos_users = torch.from_numpy(coo.row.astype(np.int64))
        pos_items = torch.from_numpy(coo.col.astype(np.int64))
        model = LightGCN(2 * n, cfg.lightgcn_dim, cfg.lightgcn_layers, normalize=False)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lightgcn_learning_rate)
        batch = cfg.lightgcn_batch_size
        best, best_state, bad = -1.0, None, 0
        bar = tqdm(range(cfg.lightgcn_epochs), desc="lightgcn", disable=not progress, leave=False)
        for epoch in bar:
            perm = torch.randperm(len(pos_users), generator=gen)
            model.train()
            for lo in range(0, len(perm), batch):
                idx = perm[lo : lo + batch]
                u, v = pos_users[idx], pos_items[idx]
                neg = torch.randint(n, (len(idx),), generator=gen)
                emb = model.get_embedding(adjacency)
                user_e, pos_e, neg_e = emb[u], emb[n + v], emb[n + neg]
                pos_rank = (user_e * pos_e).sum(dim=1)
                neg_rank = (user_e * neg_e).sum(dim=1)
                loss = model.recommendation_loss(
                    pos_rank,
                    neg_rank,
                    node_id=torch.cat([u, n + v, n + neg]),
                    lambda_reg=cfg.lightgcn_weight_decay,
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if epoch + 1 < cfg.lightgcn_min_epochs or (epoch + 1) % cfg.lightgcn_eval_every:
                continue
            model.eval()
            with torch.no_grad():
                emb = model.get_embedding(adjacency)
            recs = _top_k(emb[:n], emb[n:], val_users, fit, 100)
            metric = _recall(recs, val_users, val)
            bar.set_postfix(val_recall=f"{metric:.4f}")
            log.info("lightgcn epoch %d: validation recall@100 %.4f", epoch + 1, metric)
            if metric > best:
                best, best_state, bad = metric, copy.deepcopy(model.state_dict()), 0
            else:
                bad += 1
                if bad >= cfg.lightgcn_patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
        # The final embeddings see every training follow, validation slice included.
        model.eval()
        with torch.no_grad():
            emb = model.get_embedding(_adjacency(follows))
        return emb[:n], emb[n:]
    finally:
        torch.set_num_threads(previous_threads)


def recommend(
    follows: sp.csr_matrix, users: np.ndarray, k: int, cfg: BaselineConfig, progress: bool = True
) -> np.ndarray:
    """Top k accounts per user by LightGCN score, never the user or what they follow."""
    user_emb, item_emb = fit_lightgcn(follows, cfg, progress)
    return _top_k(user_emb, item_emb, np.asarray(users, dtype=np.int64), follows, k)
