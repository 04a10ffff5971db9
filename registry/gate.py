"""The promotion gate: a challenger must beat the champion and the floors, and its index
must reach the target ANN recall. Returns the decision with its reasons."""

from __future__ import annotations

from dataclasses import dataclass, field

GATED_METRICS = ("recall@100", "map@100")


@dataclass
class Decision:
    """Promote or not, and why (each reason one line)."""

    promote: bool
    reasons: list[str] = field(default_factory=list)


def decide(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    floors: dict[str, float],
    ann_recall: float | None,
    target_ann_recall: float,
) -> Decision:
    """Compare metric by metric; every failed condition is a reason."""
    reasons: list[str] = []
    ok = True
    for metric in GATED_METRICS:
        value = challenger.get(metric)
        if value is None:
            return Decision(False, [f"challenger has no {metric}"])
        floor = floors.get(metric, 0.0)
        if value < floor:
            ok = False
            reasons.append(f"{metric} {value:.4f} below floor {floor:.4f}")
        if champion is not None and metric in champion:
            if value <= champion[metric]:
                ok = False
                reasons.append(
                    f"{metric} {value:.4f} does not beat champion {champion[metric]:.4f}"
                )
            else:
                reasons.append(f"{metric} {value:.4f} beats champion {champion[metric]:.4f}")
    if ann_recall is None or ann_recall < target_ann_recall:
        ok = False
        reasons.append(f"index ANN recall@100 {ann_recall} below target {target_ann_recall}")
    else:
        reasons.append(f"index ANN recall@100 {ann_recall:.4f} >= {target_ann_recall}")
    if champion is None:
        reasons.append("no champion yet")
    return Decision(ok, reasons)


def fairness_check(
    decision: Decision, challenger: dict[str, object], limit: float | None
) -> Decision:
    """With `gate.max_disparity` set, the challenger's worst exposure disparity over the
    account groups of `eval.groups` must not exceed it (off by default)."""
    if limit is None:
        return decision
    value = challenger.get("max_disparity")
    if not isinstance(value, (int, float)):
        return Decision(False, [*decision.reasons, "gate.max_disparity is set but no "
                                "exposure disparity was measured: name eval.groups"])  # fmt: skip
    if value > limit:
        return Decision(
            False, [*decision.reasons, f"exposure disparity {value:.2f} above {limit:.2f}"]
        )
    return Decision(
        decision.promote, [*decision.reasons, f"exposure disparity {value:.2f} <= {limit:.2f}"]
    )
