"""Fixtures of the CARLA backend's tests against the FAKE server (tests/fakes/carla_server.py): a fresh server per test,
a short route file, fast settings, and environments that are closed after the test however it ended."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

_PORTS = itertools.count(2611)  # the fake's servers live in-process, keyed by (host, port): one port per test

# One short route on a straight road of Town01 (road 24, lane -1): 70 m, no junction, both waypoints on the lane's centre
# line (read off carla.Map's waypoints of the town). The lane's CARLA yaw is 89.99128 degrees: it runs along CARLA's +y,
# which is w0sim's -y (heading -pi/2), so a left/right or clockwise/counter-clockwise mix-up shows in every coordinate.
SHORT_ROUTE_TOWN = "Town01"
SHORT_ROUTE_START = (88.404205, 225.0)  # CARLA frame
SHORT_ROUTE_END = (88.414848, 295.0)
SHORT_ROUTE_LANE_YAW_DEG = 89.99128
SHORT_ROUTE_XML = f"""<?xml version="1.0" encoding="UTF-8"?>
<routes>
   <route id="7" town="{SHORT_ROUTE_TOWN}">
      <weathers>
         <weather route_percentage="0" cloudiness="5.0" precipitation="0.0" sun_altitude_angle="45.0"/>
      </weathers>
      <waypoints>
         <position x="{SHORT_ROUTE_START[0]}" y="{SHORT_ROUTE_START[1]}" z="0.0"/>
         <position x="{SHORT_ROUTE_END[0]}" y="{SHORT_ROUTE_END[1]}" z="0.0"/>
      </waypoints>
      <scenarios>
      </scenarios>
   </route>
</routes>
"""


@pytest.fixture(scope="session")
def town_dir() -> Path:
    """The shared CARLA towns (TownNN.xodr); the test is skipped, saying where they were looked for, when absent."""
    pytest.importorskip("carla", reason="the fake CARLA server needs the carla client package (pip install 'w0sim[carla]')")
    from tests.fakes.carla_server import shared_town_dir

    return shared_town_dir()


@pytest.fixture(scope="session")
def short_route(tmp_path_factory) -> Path:
    """A Leaderboard 2.x route file with the one short route of SHORT_ROUTE_XML."""
    path = tmp_path_factory.mktemp("carla_routes") / "short_route.xml"
    path.write_text(SHORT_ROUTE_XML)
    return path


@pytest.fixture
def server(town_dir):
    """A started fake CARLA 0.9.16 server on a port of its own (a hung tick gives up after 5 s at most)."""
    from tests.fakes.carla_server import FakeCarlaServer

    srv = FakeCarlaServer(town_dir, port=next(_PORTS), hang_limit_s=5.0).start()
    yield srv
    srv.stop()


@pytest.fixture
def settings(server):
    """Fast settings for `server`: 1 s time-outs, 0.1 s ticks (one per 0.1 s step), one warm-up tick."""
    from sim.envs.backends.carla.settings import CarlaSettings

    return CarlaSettings(port=server.port, timeout_s=1.0, fixed_delta_s=0.1, sensor_timeout_s=0.5, warmup_ticks=1)


@pytest.fixture
def make_env(short_route, town_dir, settings):
    """make_env(**kwargs): `gym.make("w0sim/Carla-v0")` of the short route on the fake server (through FakeClient), with
    `settings` unless `carla=` is given; every environment made is closed after the test."""
    import gymnasium as gym

    import sim.envs  # noqa: F401 - registers the ids
    from tests.fakes.carla_server import FakeClient

    made = []

    def make(**kwargs):
        options = {"split": f"carla:{short_route}", "town_dir": town_dir, "carla": settings, "client_factory": FakeClient}
        options.update(kwargs)
        env = gym.make("w0sim/Carla-v0", **options)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()
