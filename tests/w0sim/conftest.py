"""Fixtures of the w0sim tests: a Leaderboard route file on an empty town, and a fake clock for decisions."""
from __future__ import annotations

import pytest


@pytest.fixture
def route_file(tmp_path):
    """A Leaderboard route file of two routes, ids 12 then 5, on Town01 (an empty town file: not loaded here)."""
    towns = tmp_path / "towns"
    towns.mkdir()
    (towns / "Town01.xodr").write_text("")
    routes = tmp_path / "routes.xml"
    routes.write_text('<routes>\n'
                      ' <route id="12" town="Town01"><waypoint x="0" y="0" z="0"/><waypoint x="100" y="0" z="0"/></route>\n'
                      ' <route id="5" town="Town01"><waypoint x="0" y="0" z="0"/><waypoint x="0" y="100" z="0"/></route>\n'
                      '</routes>\n')
    return routes, towns


DECISION_S = 0.25  # what every decision takes on the fake clock


@pytest.fixture(autouse=True)
def fake_decision_clock(monkeypatch):
    """Decisions timed on a fake clock that moves DECISION_S per decision, so that rows compare whole."""
    from w0sim.latency import DecisionTimer

    ticks = iter(range(10**9))
    monkeypatch.setattr(DecisionTimer, "clock", staticmethod(lambda: next(ticks) * DECISION_S))
