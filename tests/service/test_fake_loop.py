"""carla-driver-interface's own CARLA-free runtime (FakeLoop, its `demo` command) drives `w0sim serve` for 200 steps,
over loopback TCP and over a Unix socket; a session that cannot give the agent its camera is refused."""
from __future__ import annotations

import subprocess

import grpc
import numpy as np
import pytest
from carla_driver_interface.protocol import DriveSessionRequest, EgodriverServiceStub
from carla_driver_interface.testing import FakeCamera, FakeLoop

from tests.service.conftest import BIN, Server, free_port, w0sim_server

STEPS = 200


@pytest.mark.parametrize("agent", ["pdm_closed", "drivevla_w0"])
@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_the_packages_fake_loop_drives_a_served_agent_for_200_steps(servers, tmp_path, agent, transport):
    host = f"unix://{tmp_path}/policy.sock" if transport == "unix" else "localhost"
    server = servers(w0sim_server, agent, host)
    with FakeLoop(server.address, [FakeCamera(width=256, height=128)], initial_speed_mps=5.0) as loop:
        result = loop.run(STEPS)
    assert (result.steps, result.terminated_by_policy) == (STEPS, False)
    assert [debug.policy_name for debug in result.debug] == [agent] * STEPS  # every plan the agent's own
    assert all(debug.inference_seconds > 0 for debug in result.debug)
    positions = result.ego.positions
    assert np.isfinite(positions).all() and positions[-1, 0] > 10.0  # it drove on along the road
    if agent == "pdm_closed":  # the route is the lane centre: PDM-Closed plans along it
        assert np.abs(result.lateral_offsets_m).max() < 0.5


def test_the_packages_demo_command_drives_a_served_agent(servers, tmp_path):
    server = servers(w0sim_server, "pdm_closed", f"unix://{tmp_path}/policy.sock")
    demo = subprocess.run([str(BIN / "carla-driver-interface"), "demo", "--driver", server.address, "--steps",
                           str(STEPS), "--camera-width", "256", "--camera-height", "128"],
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr


def test_a_session_without_a_camera_is_refused_for_a_camera_agent_and_taken_for_a_privileged_one(servers):
    for agent, refused in (("drivevla_w0", True), ("pdm_closed", False)):
        server = servers(w0sim_server, agent)
        with grpc.insecure_channel(server.address) as channel:
            stub = EgodriverServiceStub(channel)
            if not refused:
                stub.start_session(DriveSessionRequest(session_uuid="no-camera"), timeout=30)
                continue
            with pytest.raises(grpc.RpcError) as err:
                stub.start_session(DriveSessionRequest(session_uuid="no-camera"), timeout=30)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details() == ("drivevla_w0: agent drivevla_w0 drives from a front camera; the session declared "
                                       "none (declare one in start_session's rollout_spec)")
        server.stop()


def test_the_packages_own_server_serves_a_w0sim_agent_in_alpasim_mode(servers):
    """`carla-driver-interface serve --mode alpasim --policy w0sim.serve:policy`: how an AlpaSim image serves one."""
    port = free_port()
    servers(Server, [str(BIN / "carla-driver-interface"), "serve", "--mode", "alpasim", "--policy", "w0sim.serve:policy",
                     "--policy-arg", "agent=pdm_closed", "--host", "localhost", "--port", str(port)], r"(serving)",
            f"localhost:{port}")
    with FakeLoop(f"localhost:{port}", [FakeCamera(width=256, height=128)], initial_speed_mps=5.0) as loop:
        result = loop.run(20)
    assert (result.steps, result.terminated_by_policy) == (20, False)
    assert result.debug == [None] * 20  # alpasim mode answers AlpaSim's pickled dict, which this client leaves alone
    assert np.abs(result.lateral_offsets_m).max() < 0.5 and result.ego.positions[-1, 0] > 5.0
