"""Row-wise updates of the shared id tables: a training step pools from the few rows its
batch touches (one small leaf tensor per table), backward fills only their gradients, and
Adam updates only those rows (lazy Adam, as SparseAdam). A dense gradient of a 1M-row table,
or SparseAdam's coalescing of its COO gradient, costs more than the rest of the step."""

from __future__ import annotations

from typing import Any

import torch


def touch_rows(
    id_tables: torch.nn.ModuleDict, batches: list[tuple[list[dict[str, Any]], dict[str, Any]]]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """For (features, batch) pairs of one step: each table's touched row ids and a leaf
    tensor of those rows. The bags of `batches` are rewritten in place to index the leaf."""
    found: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for features, batch in batches:
        for feat in features:
            if feat["kind"] == "id_bag":
                found.setdefault(feat["ids"], []).append((batch, feat["name"]))
    rows: dict[str, torch.Tensor] = {}
    leaves: dict[str, torch.Tensor] = {}
    for table, bags in found.items():
        flats = [batch[name][0] for batch, name in bags]
        unique, inverse = torch.unique(torch.cat(flats), return_inverse=True)
        for (batch, name), part in zip(bags, torch.split(inverse, [len(f) for f in flats])):
            _, offsets, segment = batch[name]
            batch[name] = (part, offsets, segment)
        rows[table] = unique
        leaves[table] = id_tables[table].weight.detach()[unique].requires_grad_()
    return rows, leaves


class RowAdam:
    """Adam on the rows a step touched; the moments of untouched rows stay as they are. No
    weight decay, like SparseAdam, which it replaces: decaying only the touched rows would
    shrink active accounts' rows and leave rare ones as they are."""

    def __init__(
        self,
        id_tables: torch.nn.ModuleDict,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.tables = id_tables
        self.lr, self.betas, self.eps = lr, betas, eps
        self.moments = {
            name: (torch.zeros_like(t.weight), torch.zeros_like(t.weight))
            for name, t in id_tables.items()
        }
        self.steps = 0

    @torch.no_grad()
    def step(self, rows: dict[str, torch.Tensor], leaves: dict[str, torch.Tensor]) -> None:
        """Update each table's `rows` with its leaf's gradient."""
        self.steps += 1
        b1, b2 = self.betas
        correction1 = 1 - b1**self.steps
        correction2 = 1 - b2**self.steps
        for name, ids in rows.items():
            grad = leaves[name].grad
            if grad is None:
                continue
            first, second = self.moments[name]
            m = first.index_select(0, ids).mul_(b1).add_(grad, alpha=1 - b1)
            v = second.index_select(0, ids).mul_(b2).addcmul_(grad, grad, value=1 - b2)
            first.index_copy_(0, ids, m)
            second.index_copy_(0, ids, v)
            update = (m / correction1).div_((v / correction2).sqrt_().add_(self.eps))
            self.tables[name].weight.index_add_(0, ids, update, alpha=-self.lr)

    def state_dict(self) -> dict[str, Any]:
        """Moments and step count, for checkpoints."""
        return {"steps": self.steps, "moments": {k: list(v) for k, v in self.moments.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's moments."""
        self.steps = state["steps"]
        self.moments = {k: (v[0], v[1]) for k, v in state["moments"].items()}
