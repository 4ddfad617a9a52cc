"""Helpers for tests that compare whole records: NaN made comparable with ==, a Leaderboard route record's
scores, a score table as a terminal shows it."""
from __future__ import annotations

import math

NAN = "NaN"  # NaN stands for itself in compared records (NaN != NaN)


def comparable(value):
    """`value` with every float NaN replaced by NAN, so that records compare with ==."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return NAN if isinstance(value, float) and math.isnan(value) else value


def scored_record(route_id: str, status: str, composed: float, route: float, penalty: float) -> dict:
    """A Leaderboard route record of just what summaries read: its id, status and three scores."""
    return {"route_id": route_id, "status": status,
            "scores": {"score_composed": composed, "score_route": route, "score_penalty": penalty}}


def table_text(report, width: int) -> str:
    """`w0sim.score.render_table(report)` as a terminal `width` columns wide shows it, without colour."""
    import io

    from rich.console import Console

    from w0sim.score import render_table

    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(render_table(report))
    return console.file.getvalue()


def latency(decisions: int, inference_s: float | None = None) -> dict:
    """A row's `latency` on the tests' fake decision clock (conftest.DECISION_S a decision)."""
    from tests.w0sim.conftest import DECISION_S

    out = {"decisions": decisions}
    if decisions:
        out.update(wall_s_mean=DECISION_S, wall_s_p95=DECISION_S, wall_s_max=DECISION_S)
    if inference_s is not None:
        out["inference_s_mean"] = inference_s
    return out
