"""`--plan-delay`: a closed-loop run drives each plan late, says so in its manifest, and a one-shot run refuses it."""
from __future__ import annotations

import json

import pytest

from agents.registry import AgentSpec
from w0sim.closed_loop import evaluate_routes
from w0sim.evaluation import evaluate
from w0sim.runner import RunError


def test_a_delayed_plan_changes_how_the_route_is_driven_and_the_manifest_says_so(tmp_path):
    spec = AgentSpec("pdm_closed")
    on_time, late = (evaluate_routes("builtin:routes", spec, tmp_path / name, limit=1, workers=1, plan_delay_s=delay)
                     for name, delay in (("on-time", 0.0), ("late", 1.0)))
    (record,), (delayed,) = on_time["_checkpoint"]["records"], late["_checkpoint"]["records"]
    # Held still for the first two decisions, the late ego takes longer over the same route.
    assert delayed["meta"]["duration_game"] > record["meta"]["duration_game"]
    assert json.loads((tmp_path / "late" / "manifest.json").read_text())["plan_delay_s"] == 1.0
    assert "plan_delay_s" not in json.loads((tmp_path / "on-time" / "manifest.json").read_text())
    with pytest.raises(RunError) as err:  # the folder of a run without the delay is another run's
        evaluate_routes("builtin:routes", spec, tmp_path / "on-time", limit=1, workers=1, plan_delay_s=1.0)
    assert "plan_delay_s: None there, 1.0 now" in str(err.value)


@pytest.mark.parametrize("delay, message", [
    (0.3, "--plan-delay: plan delay 0.3 s must be a whole number of decisions (0.5 s each), 0 or more"),
    (-0.5, "--plan-delay: plan delay -0.5 s must be a whole number of decisions (0.5 s each), 0 or more"),
])
def test_a_delay_that_is_not_a_whole_number_of_decisions_is_refused(tmp_path, delay, message):
    with pytest.raises(RunError) as err:
        evaluate_routes("builtin:routes", AgentSpec("pdm_closed"), tmp_path, limit=1, plan_delay_s=delay)
    assert str(err.value) == message


def test_a_one_shot_run_refuses_a_plan_delay(tmp_path):
    with pytest.raises(RunError) as err:
        evaluate("builtin:navtest", AgentSpec("constant_velocity"), tmp_path, limit=1, plan_delay_s=0.5)
    assert str(err.value) == ("--plan-delay 0.5: a plan delay applies to closed-loop routes; builtin:navtest is scored "
                              "one-shot here (one decision per scene)")
