"""Unit tests of the CARLA backend's parts that need no server, nor the carla client package: sensor frames, the
watchdog, the PID follower, the trajectory and direct controllers, the settings, the actor types.

Expected values are worked out by hand or from CARLA's conventions (y to the right, yaw clockwise in degrees, steer
positive to the right, BGRA images), not read back from the code under test."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from sim.envs.backends.carla.control import (
    MAX_WHEEL_ANGLE_RAD,
    PID,
    Control,
    DirectController,
    PIDGains,
    TrajectoryController,
)
from sim.envs.backends.carla.sensors import SensorFrames, image_rgb
from sim.envs.backends.carla.settings import CarlaSettings
from sim.envs.backends.carla.watchdog import call_with_deadline
from sim.envs.backends.carla.world import agent_type_of
from sim.envs.backends.failures import SimulationCrashed
from sim.state import AgentType


class _Frame:
    def __init__(self, frame: int, tag: str = ""):
        self.frame, self.tag = frame, tag


def _deliver_later(calls, delay: float = 0.05) -> threading.Thread:
    """Run the callbacks `calls` ((callback, data), ...) from another thread after `delay` s."""
    def run():
        time.sleep(delay)
        for callback, data in calls:
            callback(data)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sensor_frames_match_frames_delivered_out_of_order_from_another_thread():
    frames = SensorFrames(timeout_s=2.0)
    front, left = frames.camera_callback("front"), frames.camera_callback("left")
    thread = _deliver_later([(front, _Frame(4, "front-4")), (left, _Frame(5, "left-5")), (front, _Frame(5, "front-5"))])
    found = frames.frame_data(5)
    thread.join()
    assert {name: data.tag for name, data in found.items()} == {"front": "front-5", "left": "left-5"}


def test_sensor_frames_a_later_frame_first_is_a_crash_at_once():
    frames = SensorFrames(timeout_s=5.0)
    front = frames.camera_callback("front")
    thread = _deliver_later([(front, _Frame(6))])
    started = time.monotonic()
    with pytest.raises(SimulationCrashed, match="front") as raised:
        frames.frame_data(5)
    assert time.monotonic() - started < 1.0  # not after the 5 s time-out
    assert "5" in str(raised.value) and "6" in str(raised.value)
    thread.join()


def test_sensor_frames_nothing_is_a_crash_after_the_timeout():
    frames = SensorFrames(timeout_s=0.3)
    frames.camera_callback("front")
    started = time.monotonic()
    with pytest.raises(SimulationCrashed, match="front") as raised:
        frames.frame_data(9)
    assert 0.28 <= time.monotonic() - started < 1.0
    assert "frame 9" in str(raised.value)


def test_sensor_frames_events_are_taken_up_to_a_frame_and_drained():
    frames = SensorFrames(timeout_s=0.3)
    collision, lane = frames.event_callback("collision"), frames.event_callback("lane_invasion")
    events = [_Frame(3, "c3"), _Frame(7, "c7"), _Frame(5, "c5")]
    for event in events:
        collision(event)
    lane(_Frame(4, "l4"))
    assert [e.tag for e in frames.take_events("collision", 5)] == ["c3", "c5"]  # arrival order
    assert frames.take_events("collision", 5) == []
    assert [e.tag for e in frames.take_events("collision", 7)] == ["c7"]
    assert frames.frame_data(1) == {}  # no camera: nothing to wait for
    frames.drain()
    assert frames.take_events("lane_invasion", 100) == []


def test_image_rgb_turns_carlas_bgra_into_rgb():
    class Image:
        width, height = 2, 1
        raw_data = bytes([1, 2, 3, 255, 10, 20, 30, 255])  # BGRA, BGRA

    rgb = image_rgb(Image())
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 2, 3)
    assert rgb.tolist() == [[[3, 2, 1], [30, 20, 10]]]


def test_call_with_deadline_returns_the_value_and_reraises_the_calls_own_error():
    assert call_with_deadline(lambda: 42, 1.0, "answering") == 42

    def fail():
        raise ValueError("its own")

    with pytest.raises(ValueError, match="its own"):
        call_with_deadline(fail, 1.0, "failing")

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_with_deadline(interrupt, 1.0, "interrupted")


def test_call_with_deadline_raises_late_after_the_deadline_without_waiting_for_the_call():
    class Late(Exception):
        pass

    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(Late, match="the slow call did not return"):
        call_with_deadline(lambda: release.wait(10.0), 0.2, "the slow call", late=Late)
    assert 0.18 <= time.monotonic() - started < 1.0
    with pytest.raises(SimulationCrashed):  # the default
        call_with_deadline(lambda: release.wait(10.0), 0.05, "another slow call")
    release.set()


def test_pid_integral_is_the_mean_of_a_window_of_20_starting_with_zeros_and_derivative_the_last_difference():
    pid = PID(PIDGains(kp=2.0, ki=0.5, kd=0.25))
    # e=1: integral 1/20, derivative 1 - 0; e=2: integral 3/20, derivative 1; e=0.5: integral 3.5/20, derivative -1.5
    assert pid.step(1.0) == pytest.approx(2.0 * 1.0 + 0.5 * 0.05 + 0.25 * 1.0)
    assert pid.step(2.0) == pytest.approx(2.0 * 2.0 + 0.5 * 0.15 + 0.25 * 1.0)
    assert pid.step(0.5) == pytest.approx(2.0 * 0.5 + 0.5 * 0.175 + 0.25 * -1.5)
    window = PID(PIDGains(kp=0.0, ki=1.0, kd=0.0))
    for _ in range(25):
        out = window.step(1.0)
    assert out == pytest.approx(1.0)  # the window holds the last 20 errors only
    assert window.step(-1.0) == pytest.approx((19 - 1) / 20)


def _plan(points, interval=0.5) -> TrajectoryController:
    controller = TrajectoryController()
    controller.set_plan(np.array([[x, y, 0.0] for x, y in points]), interval)
    return controller


def test_trajectory_controller_desired_speed_is_twice_the_distance_between_the_half_and_one_second_poses():
    # 10 Hz poses: 0.5 m in the first half second, then 1.5 m between 0.5 s and 1.0 s: 3.0 m/s.
    x = [0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 1.1, 1.4, 1.7, 2.0]
    points = [(v, 0.0) for v in x]
    assert _plan(points, 0.1).control(np.zeros(3), 3.29).brake == 0.0  # 3.29 / 3.0 < 1.1
    assert _plan(points, 0.1).control(np.zeros(3), 3.31).brake == 1.0  # 3.31 / 3.0 > 1.1
    # 2 Hz poses 2 m apart: 4 m/s.
    points = [(2.0 * (k + 1), 0.0) for k in range(8)]
    assert _plan(points).control(np.zeros(3), 4.39).brake == 0.0
    assert _plan(points).control(np.zeros(3), 4.41).brake == 1.0


def test_trajectory_controller_throttle_brake_and_steer():
    ahead = [(2.0 * (k + 1), 0.0) for k in range(8)]  # 4 m/s
    control = _plan(ahead).control(np.zeros(3), 0.0)
    # speed error clipped to 0.25: 5 * 0.25 + 0.5 * 0.25 / 20 + 1.0 * 0.25 = 1.506 -> clipped to 0.75
    assert control == Control(throttle=0.75, steer=0.0, brake=0.0)
    crawl = [(0.1 * (k + 1), 0.0) for k in range(8)]  # 0.2 m/s < 0.4 m/s
    assert _plan(crawl).control(np.zeros(3), 0.0) == Control(throttle=0.0, steer=0.0, brake=1.0)
    assert TrajectoryController().control(np.zeros(3), 0.0) == Control(brake=1.0)  # no plan
    # A target to the LEFT (w0sim's +y): the first pose >= 2.25 m away (desired < 5.5 m/s) is (4, 2), at atan2(2, 4) =
    # 26.565 deg = 0.29517 of 90; lateral PID 1.25 * a + 0.75 * a / 20 + 0.3 * a; CARLA's steer is its NEGATIVE.
    left = [(2.0 * (k + 1), 1.0 * (k + 1)) for k in range(8)]
    angle = math.degrees(math.atan2(2.0, 4.0)) / 90.0
    steer = _plan(left).control(np.zeros(3), 0.0).steer
    assert steer == pytest.approx(-(1.25 + 0.75 / 20 + 0.3) * angle)
    assert steer < 0
    right = [(x, -y) for x, y in left]
    assert _plan(right).control(np.zeros(3), 0.0).steer == pytest.approx(-steer)


def test_trajectory_controller_sees_the_global_plan_from_the_egos_pose():
    # The ego at (10, 5) facing +y (heading pi/2): poses along +y are straight ahead, poses towards -x are to its left.
    ego = np.array([10.0, 5.0, math.pi / 2])
    ahead = [(10.0, 5.0 + 2.0 * (k + 1)) for k in range(8)]
    assert _plan(ahead).control(ego, 0.0).steer == pytest.approx(0.0, abs=1e-9)
    left = [(10.0 - 1.0 * (k + 1), 5.0 + 2.0 * (k + 1)) for k in range(8)]
    assert _plan(left).control(ego, 0.0).steer < -0.1


def test_direct_controller_maps_acceleration_and_integrates_the_steering_rate():
    controller = DirectController()
    control = controller.control(np.array([2.0, 0.7]), 0.1)
    assert control.throttle == pytest.approx(0.5) and control.brake == 0.0
    assert control.steer == pytest.approx(-0.07 / math.radians(70.0))
    control = controller.control(np.array([-4.0, 0.7]), 0.1)
    assert control.brake == pytest.approx(0.5) and control.throttle == 0.0
    assert control.steer == pytest.approx(-0.14 / math.radians(70.0))
    assert controller.control(np.array([0.0, -0.7]), 0.2).steer == pytest.approx(0.0, abs=1e-12)
    assert controller.control(np.array([8.0, -100.0]), 0.1) == Control(throttle=1.0, steer=1.0, brake=0.0)
    assert controller.control(np.array([-16.0, 0.0]), 0.1).brake == 1.0
    assert MAX_WHEEL_ANGLE_RAD == pytest.approx(math.radians(70.0))


@pytest.mark.parametrize("field, value", [
    ("host", ""), ("port", 0), ("port", 70000), ("traffic_manager_port", -1), ("timeout_s", 0.0),
    ("sensor_timeout_s", -1.0), ("restart_wait_s", float("nan")), ("timeout_s", float("inf")), ("fixed_delta_s", 0.03),
    ("fixed_delta_s", 0.2), ("fixed_delta_s", 0.0), ("warmup_ticks", -1), ("traffic_manager_seed", -1),
    ("traffic_manager_seed", 2**31),
])
def test_carla_settings_name_each_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        CarlaSettings(**{field: value})


def test_carla_settings_name_every_bad_field_at_once_and_accept_whole_ticks():
    with pytest.raises(ValueError) as raised:
        CarlaSettings(port=0, timeout_s=-1.0, fixed_delta_s=0.03)
    assert all(name in str(raised.value) for name in ("port", "timeout_s", "fixed_delta_s"))
    assert [CarlaSettings(fixed_delta_s=d).ticks_per_step for d in (0.1, 0.05, 0.025, 0.02)] == [1, 2, 4, 5]
    assert CarlaSettings(host="carla.example", port=2010).address == "carla.example:2010"


@pytest.mark.parametrize("type_id, wheels, expected", [
    ("vehicle.lincoln.mkz_2020", 4, AgentType.VEHICLE), ("vehicle.bh.crossbike", 2, AgentType.BICYCLE),
    ("vehicle.tesla.model3", None, AgentType.VEHICLE), ("walker.pedestrian.0001", None, AgentType.PEDESTRIAN),
    ("static.prop.trafficcone01", None, AgentType.TRAFFIC_CONE), ("static.prop.barrel", None, AgentType.GENERIC_OBJECT),
    ("sensor.camera.rgb", None, None), ("sensor.other.collision", None, None), ("traffic.traffic_light", None, None),
    ("spectator", None, None),
])
def test_agent_type_of(type_id, wheels, expected):
    assert agent_type_of(type_id, wheels) == expected
