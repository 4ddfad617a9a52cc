"""The agent input and world view w0sim builds from an egodriver session alone (w0sim.contract_inputs)."""
from __future__ import annotations

import io
import math

import cv2
import numpy as np
import pytest
import shapely
from carla_driver_interface.driver import CameraFrame, DriveContext, SessionState
from carla_driver_interface.geometry import Pose
from carla_driver_interface.geometry import Trajectory as RigTrajectory
from carla_driver_interface.protocol import AABB, CarlaActorState, CarlaRendererData, DynamicState, Vec3
from carla_driver_interface.testing import FakeCamera
from PIL import Image

from agents.base import SensorConfig
from agents.egodriver_wire import front_camera
from agents.human import HumanAgent
from sim.geometry import global_to_local
from sim.state import AgentType, StateIndex
from w0sim.contract_inputs import COMMAND_WORDS, ContractInputError, choose_camera, contract_inputs

NOW_US = 2_000_000
OBSERVATIONS = 21  # 10 Hz from t = 0 to t = NOW_US

LEFT, STRAIGHT, RIGHT, UNKNOWN = np.eye(4, dtype=np.int8)


def ego_pose(k: int) -> tuple[float, float, float]:
    """(x, y, heading) of observation k in the session's local frame: a gentle left curve."""
    return 100.0 + k, -50.0 + 0.02 * k ** 2, 0.3 + 0.02 * k


def level_pose(k: int) -> tuple[float, float, float]:
    """(x, y, heading) of observation k of an ego driving along the local x axis (its rig frame is the local frame
    moved: transforms into it are exact)."""
    return 100.0 + k, -50.0, 0.0


def dynamic_state(k: int) -> DynamicState:
    # Values the contract's float32 Vec3 holds exactly.
    return DynamicState(linear_velocity=Vec3(x=10.0 + 0.25 * k, y=0.125 * k, z=0.0),
                        linear_acceleration=Vec3(x=0.5 + 0.0625 * k, y=-0.25, z=0.0),
                        angular_velocity=Vec3(x=0.0, y=0.0, z=0.03125 * k))


def make_session(count: int = OBSERVATIONS, start_us: int = 0, route=None, cameras=None, frames=None,
                 pose=ego_pose) -> SessionState:
    session = SessionState(uuid="session", seed=0, scene_id="scene", cameras=cameras or {})
    for k in range(count):
        x, y, heading = pose(k)
        session.ego_trajectory.append(start_us + 100_000 * k, Pose.from_xyz_yaw(x, y, 0.0, heading))
        session.dynamic_states.append(dynamic_state(k))
    if route is not None:
        session.route_waypoints_in_rig = np.asarray(route, dtype=np.float64)
    if frames is not None:
        session.frame_history.update(frames)
    return session


def context(session: SessionState, now_us: int = NOW_US, renderer_data=None) -> DriveContext:
    return DriveContext(session=session, time_now_us=now_us, time_query_us=now_us + 100_000, renderer_data=renderer_data)


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def frame(rgb: np.ndarray, end_us: int, logical_id: str = "CAM_F0") -> CameraFrame:
    return CameraFrame(logical_id=logical_id, frame_start_us=end_us - 10_000, frame_end_us=end_us, image_bytes=png(rgb))


def uniform(colour, width: int = 256, height: int = 128) -> np.ndarray:
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (height, width, 3)).copy()


RED, GREEN, BLUE, YELLOW, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 255, 255)
STRAIGHT_ROUTE = [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [20.0, 0.0, 0.0], [40.0, 0.0, 0.0]]


def expected_states(indices, pose=ego_pose) -> np.ndarray:
    """(len(indices), 11) ego states of the given observations, as w0sim's ego state holds them."""
    states = np.zeros((len(indices), 11))
    for row, k in zip(states, indices):
        row[:3] = pose(k)
        row[[StateIndex.VELOCITY_X, StateIndex.VELOCITY_Y]] = 10.0 + 0.25 * k, 0.125 * k
        row[[StateIndex.ACCELERATION_X, StateIndex.ACCELERATION_Y]] = 0.5 + 0.0625 * k, -0.25
        row[StateIndex.ANGULAR_VELOCITY] = 0.03125 * k
    return states


# --- history ------------------------------------------------------------------------------------------------------


def test_history_is_sampled_every_half_second_and_relative_to_now():
    agent_input, world = contract_inputs(context(make_session()), SensorConfig(), privileged=False, camera_id=None)
    assert world is None
    history = expected_states([5, 10, 15, 20])
    np.testing.assert_allclose(agent_input.ego_state, history[-1], rtol=0, atol=1e-12)
    poses = global_to_local(history[:, :3], history[-1, :3])
    assert agent_input.ego_poses.shape == (4, 3)
    np.testing.assert_allclose(agent_input.ego_poses, poses, rtol=0, atol=1e-5)  # float32 values, as NAVSIM's
    assert np.array_equal(agent_input.ego_poses[-1], [0.0, 0.0, 0.0])
    assert np.array_equal(agent_input.ego_velocity, [[11.25, 0.625], [12.5, 1.25], [13.75, 1.875], [15.0, 2.5]])
    assert np.array_equal(agent_input.ego_acceleration, [[0.8125, -0.25], [1.125, -0.25], [1.4375, -0.25], [1.75, -0.25]])
    assert agent_input.cameras is None


def test_history_takes_the_newest_observation_at_or_before_each_time():
    agent_input, _ = contract_inputs(context(make_session(), now_us=2_050_000), SensorConfig(), False, None)
    history = expected_states([5, 10, 15, 20])  # 0.55, 1.05, 1.55, 2.05 s: the observations 0.05 s before
    np.testing.assert_allclose(agent_input.ego_state, history[-1], rtol=0, atol=1e-12)
    assert np.array_equal(agent_input.ego_velocity[:, 0], [11.25, 12.5, 13.75, 15.0])
    agent_input, _ = contract_inputs(context(make_session(), now_us=1_999_999), SensorConfig(), False, None)
    assert np.array_equal(agent_input.ego_velocity[:, 0], [11.0, 12.25, 13.5, 14.75])  # observations 4, 9, 14, 19


def test_history_before_the_session_start_is_the_first_observation():
    session = make_session(count=11, start_us=500_000)  # observations from 0.5 s to 1.5 s
    agent_input, _ = contract_inputs(context(session, now_us=1_500_000), SensorConfig(), False, None)
    # Wanted 0.0, 0.5, 1.0 and 1.5 s: observations 0 (before the first: the first), 0, 5, 10.
    history = expected_states([0, 0, 5, 10])
    np.testing.assert_allclose(agent_input.ego_state, history[-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(agent_input.ego_poses, global_to_local(history[:, :3], history[-1, :3]), rtol=0, atol=1e-5)
    assert np.array_equal(agent_input.ego_poses[0], agent_input.ego_poses[1])
    assert np.array_equal(agent_input.ego_velocity[:, 0], [10.0, 10.0, 11.25, 12.5])


def test_history_of_another_length():
    agent_input, _ = contract_inputs(context(make_session()), SensorConfig(history_frames=2), False, None)
    assert agent_input.num_frames == 2
    assert np.array_equal(agent_input.ego_velocity[:, 0], [13.75, 15.0])


def test_missing_dynamic_states_leave_the_dynamics_zero():
    session = make_session()
    session.dynamic_states = session.dynamic_states[:15]  # observations 15..20 have none
    agent_input, _ = contract_inputs(context(session), SensorConfig(), False, None)
    assert np.array_equal(agent_input.ego_velocity, [[11.25, 0.625], [12.5, 1.25], [0.0, 0.0], [0.0, 0.0]])
    expected = np.zeros(11)
    expected[:3] = ego_pose(20)
    np.testing.assert_allclose(agent_input.ego_state, expected, rtol=0, atol=1e-12)


def test_no_egomotion_is_an_error():
    with pytest.raises(ContractInputError) as err:
        contract_inputs(context(make_session(count=0)), SensorConfig(), False, None)
    assert str(err.value) == "no egomotion observation yet: submit_egomotion_observation before drive"


# --- driving command ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route, one_hot, text", [
    (None, UNKNOWN, "follow the current lane"),
    ([[5.0, 0.0, 0.0]], UNKNOWN, "follow the current lane"),
    (STRAIGHT_ROUTE, STRAIGHT, "follow the current lane"),
    ([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [10.0, 30.0, 0.0]], LEFT, "turn left at the next intersection"),
    ([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [10.0, -30.0, 0.0]], RIGHT, "turn right at the next intersection"),
    # 20 m on along the route lies 2.09 m (left) and 1.89 m (straight) to the side.
    ([[0.0, 0.0, 0.0], [40.0, 4.2, 0.0]], LEFT, "turn left at the next intersection"),
    ([[0.0, 0.0, 0.0], [40.0, 3.8, 0.0]], STRAIGHT, "follow the current lane"),
    ([[0.0, 0.0, 0.0], [40.0, -4.2, 0.0]], RIGHT, "turn right at the next intersection"),
    # The route starts behind the ego: 20 m on from the ego's nearest route point (10 m along) is (10, 10), left
    # (20 m on from the route's start would be (10, 0), straight ahead).
    ([[-10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [10.0, 30.0, 0.0]], LEFT, "turn left at the next intersection"),
    # A route shorter than 20 m: its end, 3 m to the left.
    ([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [12.0, 3.0, 0.0]], LEFT, "turn left at the next intersection"),
    # Arc length is measured on the ground: a 30 m climb does not make the route longer (20 m on is on the last leg).
    ([[0.0, 0.0, 0.0], [5.0, 0.0, 30.0], [10.0, 0.0, 0.0], [30.0, 10.0, 0.0]], LEFT, "turn left at the next intersection"),
])
def test_driving_command_from_the_route(route, one_hot, text):
    agent_input, _ = contract_inputs(context(make_session(route=route)), SensorConfig(), False, None)
    assert agent_input.driving_command.dtype == np.int8
    assert np.array_equal(agent_input.driving_command, one_hot)
    assert agent_input.command_text == text


def test_command_words():
    assert COMMAND_WORDS == {"left": "turn left at the next intersection", "right": "turn right at the next intersection",
                             "straight": "follow the current lane", "unknown": "follow the current lane"}


# --- cameras ------------------------------------------------------------------------------------------------------


def test_choose_camera_prefers_cam_f0():
    cameras = {"a_forward": FakeCamera(logical_id="a_forward").available_camera(), "CAM_F0": front_camera(),
               "left": FakeCamera(logical_id="left", yaw_left_deg=60.0).available_camera()}
    assert choose_camera(make_session(cameras=cameras)) == "CAM_F0"


def test_choose_camera_takes_the_most_forward_looking_one():
    cameras = {name: FakeCamera(logical_id=name, yaw_left_deg=yaw).available_camera()
               for name, yaw in [("left", 55.0), ("slightly_right", -12.0), ("slightly_left", 20.0), ("back", 180.0)]}
    assert choose_camera(make_session(cameras=cameras)) == "slightly_right"
    pitched = {"down": FakeCamera(logical_id="down", pitch_down_deg=40.0).available_camera(),
               "left": FakeCamera(logical_id="left", yaw_left_deg=30.0).available_camera()}
    assert choose_camera(make_session(cameras=pitched)) == "left"


def test_choose_camera_breaks_ties_by_name():
    cameras = {name: FakeCamera(logical_id=name).available_camera() for name in ("front_b", "front_a", "front_c")}
    assert choose_camera(make_session(cameras=cameras)) == "front_a"


def test_choose_camera_without_cameras_is_an_error():
    with pytest.raises(ContractInputError) as err:
        choose_camera(make_session())
    assert str(err.value) == "the session declared no camera"


def camera_input(frames: list[CameraFrame], camera_id: str = "CAM_F0"):
    session = make_session(frames={camera_id: frames})
    agent_input, _ = contract_inputs(context(session), SensorConfig(cameras=True), False, camera_id)
    return agent_input.cameras


def test_frames_are_chosen_per_history_time():
    frames = [frame(uniform(RED), 700_000), frame(uniform(GREEN), 1_000_000), frame(uniform(BLUE), 1_600_000),
              frame(uniform(WHITE), 1_900_000)]
    cameras = camera_input(frames)
    assert cameras.shape == (4, 128, 256, 3) and cameras.dtype == np.uint8
    # 0.5 s: before the first frame (the oldest); 1.0 s: the frame ending then; 1.5 s: the one before; 2.0 s: the last.
    assert np.array_equal(cameras, np.stack([uniform(RED), uniform(GREEN), uniform(GREEN), uniform(WHITE)]))


def test_frames_of_a_declared_camera_other_than_cam_f0():
    cameras = camera_input([frame(uniform(BLUE), 100_000, "camera_front")], "camera_front")
    assert np.array_equal(cameras, np.stack([uniform(BLUE)] * 4))


def test_a_wider_frame_keeps_its_middle_columns():
    image = uniform(GREEN, width=600, height=200)
    image[:, :100] = RED
    image[:, 500:] = BLUE
    image[:, 300:500] = YELLOW  # the kept middle 400 columns: green then yellow
    cameras = camera_input([frame(image, 2_000_000)])
    expected = uniform(GREEN)
    expected[:, 128:] = YELLOW
    assert np.array_equal(cameras[-1], expected)


def test_a_wider_frame_is_cropped_to_its_middle_480_columns_and_area_resized():
    """A 640 x 240 frame of noise: exactly OpenCV's area resize of columns 80 .. 560 (the 2:1 middle)."""
    image = np.random.default_rng(0).integers(0, 256, (240, 640, 3), dtype=np.uint8)
    expected = cv2.resize(np.ascontiguousarray(image[:, 80:560]), (256, 128), interpolation=cv2.INTER_AREA)
    assert np.array_equal(camera_input([frame(image, 2_000_000)])[-1], expected)


def test_a_taller_frame_keeps_its_middle_rows():
    image = uniform(GREEN, width=256, height=256)
    image[:64] = RED
    image[192:] = BLUE
    image[128:192] = YELLOW
    cameras = camera_input([frame(image, 2_000_000)])
    expected = uniform(GREEN)
    expected[64:] = YELLOW
    assert np.array_equal(cameras[-1], expected)


def test_a_frame_of_the_same_aspect_is_resized():
    image = uniform(RED, width=512, height=256)
    image[:, 256:] = WHITE
    image[128:, :256] = BLUE
    expected = uniform(RED)
    expected[:, 128:] = WHITE
    expected[64:, :128] = BLUE
    assert np.array_equal(camera_input([frame(image, 0)])[-1], expected)


def test_camera_wanted_without_a_frame_is_an_error():
    session = make_session(cameras={"CAM_F0": front_camera()}, frames={"CAM_F0": []})
    with pytest.raises(ContractInputError) as err:
        contract_inputs(context(session), SensorConfig(cameras=True), False, "CAM_F0")
    assert str(err.value) == "no frame of camera 'CAM_F0' yet: submit_image_observation before drive"
    with pytest.raises(ContractInputError) as err:
        contract_inputs(context(make_session(frames={"CAM_F0": [frame(uniform(RED), 0)]})), SensorConfig(cameras=True),
                        False, "other")
    assert str(err.value) == "no frame of camera 'other' yet: submit_image_observation before drive"


def test_frames_are_not_read_for_an_agent_without_cameras():
    session = make_session(frames={"CAM_F0": [frame(uniform(RED), 0)]})
    agent_input, _ = contract_inputs(context(session), SensorConfig(cameras=False), False, "CAM_F0")
    assert agent_input.cameras is None


# --- the privileged world -----------------------------------------------------------------------------------------


def rotate(heading: float, points) -> np.ndarray:
    c, s = math.cos(heading), math.sin(heading)
    return np.asarray(points, dtype=np.float64) @ np.array([[c, s], [-s, c]])


def check_straight_route_world(pose) -> None:
    agent_input, world = contract_inputs(context(make_session(route=STRAIGHT_ROUTE, pose=pose)), SensorConfig(), True,
                                         None)
    x, y, heading = pose(20)
    origin = np.array([x, y])
    rig = np.array([[-10.0, 0.0], [0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [40.0, 0.0]])
    (lane,) = world.road_map.lanes
    assert (lane.id, lane.lane_group, lane.successors, lane.predecessors, lane.is_connector, lane.traffic_light) == (
        "route", "route", (), (), False, None)
    np.testing.assert_allclose(lane.centerline, origin + rotate(heading, rig), rtol=0, atol=1e-9)
    for boundary, side in ((lane.left_boundary, 1.75), (lane.right_boundary, -1.75)):
        # The offset line of a straight centerline: its two ends, or points along it.
        local = global_to_local(np.column_stack([boundary, np.zeros(len(boundary))]), [x, y, heading])
        np.testing.assert_allclose(local[[0, -1], :2], [[-10.0, side], [40.0, side]], rtol=0, atol=1e-9)
        np.testing.assert_allclose(local[:, 1], side, rtol=0, atol=1e-9)
        assert np.all(np.diff(local[:, 0]) > 0)
    assert lane.speed_limit == 50 / 3.6
    (area,) = world.road_map.areas
    assert (area.id, area.kind) == ("route", "roadblock")
    assert area.polygon.equals(lane.polygon())
    assert area.polygon.area == pytest.approx(50.0 * 3.5, abs=1e-9)
    assert area.polygon.contains(shapely.Point(x, y))
    assert world.road_map.name == "egodriver-route"
    assert world.route == ["route"]
    assert np.array_equal(world.ego_state, agent_input.ego_state)
    np.testing.assert_allclose(world.ego_state, expected_states([20], pose)[0], rtol=0, atol=1e-12)
    assert world.agents_before is None and world.history_s == 0.0
    assert world.light_ids == [] and world.light_status.shape == (0,) and world.light_status.dtype == np.int8
    assert world.ego_log.shape == (OBSERVATIONS, 11)
    np.testing.assert_allclose(world.ego_log, expected_states(range(OBSERVATIONS), pose), rtol=0, atol=1e-12)
    assert world.step == OBSERVATIONS - 1
    assert world.time_s == pytest.approx(2.0, abs=1e-12)
    assert world.agents.track_ids == [] and world.agents.x.shape == (0,) and world.agents.agent_type.dtype == np.int8


def test_privileged_world_is_one_lane_along_the_route():
    check_straight_route_world(level_pose)


def test_privileged_world_of_a_straight_route_seen_from_a_turned_ego():
    """Turned into the local frame, a straight route's points are only nearly collinear (shapely's offset_curve gave a
    MultiLineString there: the bug this found)."""
    check_straight_route_world(ego_pose)


def test_privileged_world_of_a_two_point_straight_route():
    _, world = contract_inputs(context(make_session(route=[[0.0, 0.0, 0.0], [20.0, 0.0, 0.0]])), SensorConfig(), True,
                               None)
    x, y, heading = ego_pose(20)
    np.testing.assert_allclose(world.road_map.lanes[0].centerline,
                               [x, y] + rotate(heading, [[-10.0, 0.0], [0.0, 0.0], [20.0, 0.0]]), rtol=0, atol=1e-9)


def test_privileged_world_of_a_curved_route():
    route = [[-2.0, 0.0, 0.0], [10.0, 0.0, 0.0], [20.0, 5.0, 0.0], [30.0, 5.0, 0.0], [30.0, 5.0, 0.0]]
    _, world = contract_inputs(context(make_session(route=route)), SensorConfig(), True, None)
    x, y, heading = ego_pose(20)
    (lane,) = world.road_map.lanes
    # The repeated last waypoint is dropped; the lane starts 10 m behind the first one.
    rig = np.array([[-12.0, 0.0], [-2.0, 0.0], [10.0, 0.0], [20.0, 5.0], [30.0, 5.0]])
    np.testing.assert_allclose(lane.centerline, [x, y] + rotate(heading, rig), rtol=0, atol=1e-9)
    centre = shapely.LineString(lane.centerline)
    for boundary, side in ((lane.left_boundary, 1.0), (lane.right_boundary, -1.0)):
        # Mitred: each boundary segment lies on its centerline segment's line moved 1.75 m to its side.
        for k in range(len(rig) - 1):
            a, b = lane.centerline[k], lane.centerline[k + 1]
            normal = np.array([a[1] - b[1], b[0] - a[0]]) / np.linalg.norm(b - a)
            np.testing.assert_allclose((boundary[[k, k + 1]] - a) @ normal, side * 1.75, rtol=0, atol=1e-9)
        assert min(centre.distance(shapely.Point(p)) for p in boundary) > 1.75 - 1e-9
        local = global_to_local(np.column_stack([boundary, np.zeros(len(boundary))]), [x, y, heading])
        assert np.sign(local[0, 1]) == side and np.sign(local[-1, 1] - 5.0) == side
    assert world.road_map.areas[0].polygon.is_valid


@pytest.mark.parametrize("route", [None, [[3.0, 1.0, 0.0]]])
def test_privileged_agent_without_a_route_is_an_error(route):
    with pytest.raises(ContractInputError) as err:
        contract_inputs(context(make_session(route=route)), SensorConfig(), True, None)
    assert str(err.value) == "no route yet: a privileged agent plans along the route (submit_route before drive)"


def test_route_on_one_point_is_an_error():
    with pytest.raises(ContractInputError) as err:
        contract_inputs(context(make_session(route=[[3.0, 1.0, 0.0]] * 3)), SensorConfig(), True, None)
    assert str(err.value) == "the route's waypoints all lie on one point"


@pytest.mark.parametrize("data, limit", [(None, 50 / 3.6), (CarlaRendererData(speed_limit_mps=8.5), 8.5),
                                         (CarlaRendererData(speed_limit_mps=0.0), 50 / 3.6),
                                         (CarlaRendererData(speed_limit_mps=-1.0), 50 / 3.6),
                                         (CarlaRendererData(speed_limit_mps=0.5), 0.5)])
def test_speed_limit_from_the_renderer_data(data, limit):
    session = make_session(route=STRAIGHT_ROUTE, pose=level_pose)
    _, world = contract_inputs(context(session, renderer_data=data), SensorConfig(), True, None)
    assert world.road_map.lanes[0].speed_limit == limit
    assert type(world.road_map.lanes[0].speed_limit) is float


def actor(track_id: str, type_id: str, x: float, y: float, heading: float, size, velocity) -> CarlaActorState:
    pose = Pose.from_xyz_yaw(x, y, 0.75, heading).to_proto()
    return CarlaActorState(track_id=track_id, type_id=type_id, pose_local_to_aabb=pose,
                           aabb=AABB(size_x=size[0], size_y=size[1], size_z=size[2]),
                           dynamic_state=DynamicState(linear_velocity=Vec3(x=velocity[0], y=velocity[1], z=0.0)))


def test_carla_actors_become_objects_in_the_local_frame():
    data = CarlaRendererData(speed_limit_mps=13.5, actors=[
        actor("car1", "vehicle.tesla.model3", 130.0, -40.0, 0.5, (4.75, 2.0, 1.5), (5.0, 0.5)),
        actor("ped1", "walker.pedestrian.0001", 118.0, -35.5, -2.0, (0.5, 0.5, 1.75), (1.25, 0.0)),
        actor("bike", "vehicle.bh.crossbike", 90.0, -52.0, math.pi / 2, (1.5, 0.75, 1.5), (0.0, 0.0))])
    session = make_session(route=STRAIGHT_ROUTE, pose=level_pose)
    _, world = contract_inputs(context(session, renderer_data=data), SensorConfig(), True, None)
    agents = world.agents
    assert agents.track_ids == ["car1", "ped1", "bike"]
    assert np.array_equal(agents.x, [130.0, 118.0, 90.0]) and np.array_equal(agents.y, [-40.0, -35.5, -52.0])
    np.testing.assert_allclose(agents.heading, [0.5, -2.0, math.pi / 2], rtol=0, atol=1e-6)  # float32 quaternions
    speeds = [(5.0, 0.5), (1.25, 0.0), (0.0, 0.0)]
    headings = [0.5, -2.0, math.pi / 2]
    vx = [math.cos(h) * u - math.sin(h) * v for h, (u, v) in zip(headings, speeds)]
    vy = [math.sin(h) * u + math.cos(h) * v for h, (u, v) in zip(headings, speeds)]
    np.testing.assert_allclose(agents.vx, vx, rtol=0, atol=1e-5)
    np.testing.assert_allclose(agents.vy, vy, rtol=0, atol=1e-5)
    assert np.array_equal(agents.length, [4.75, 0.5, 1.5])
    assert np.array_equal(agents.width, [2.0, 0.5, 0.75])
    assert np.array_equal(agents.height, [1.5, 1.75, 1.5])
    assert agents.agent_type.dtype == np.int8
    assert agents.agent_type.tolist() == [AgentType.VEHICLE, AgentType.PEDESTRIAN, AgentType.VEHICLE]
    assert agents.valid.dtype == bool and agents.valid.tolist() == [True, True, True]
    assert world.road_map.lanes[0].speed_limit == 13.5


# --- the recorded ground truth ------------------------------------------------------------------------------------


def test_the_recorded_ground_truth_is_the_ego_log_from_now_and_log_replay_drives_it():
    """The truth (rig frame of the current pose) from now on at 10 Hz, in the local frame, after the ego's state now."""
    session = make_session(route=STRAIGHT_ROUTE)
    truth_times = [NOW_US + 50_000 * k for k in range(0, 62)]  # 20 Hz, to 3.05 s ahead
    session.ground_truth_in_rig = RigTrajectory(truth_times, [Pose.from_xyz_yaw(0.4 * k, 0.01 * k ** 2, 0.0, 0.01 * k)
                                                             for k in range(62)])
    agent_input, world = contract_inputs(context(session), SensorConfig(), True, None)
    now = expected_states([20])[0]
    assert world.step == 0 and world.ego_log.shape == (1 + 30, 11)  # now, then 0.1 .. 3.0 s
    np.testing.assert_allclose(world.ego_log[0], now, rtol=0, atol=1e-12)
    current = Pose.from_xyz_yaw(now[0], now[1], 0.0, now[2])
    for row, k in zip(world.ego_log[1:], range(2, 62, 2)):  # every other 20 Hz pose
        local = current @ Pose.from_xyz_yaw(0.4 * k, 0.01 * k ** 2, 0.0, 0.01 * k)
        np.testing.assert_allclose(row[:3], [local.position[0], local.position[1], local.yaw], rtol=0, atol=1e-9)
        assert not row[3:].any()
    replay = HumanAgent().compute_trajectory(agent_input, world).poses
    # NAVSIM's poses at 0.5 s steps; the truth ends at 3.05 s, so the 3.5 and 4.0 s poses hold its last one (3.0 s).
    expected = [[0.4 * k, 0.01 * k ** 2, 0.01 * k] for k in (10, 20, 30, 40, 50, 60, 60, 60)]
    np.testing.assert_allclose(replay, expected, rtol=0, atol=1e-9)


def test_without_ground_truth_the_ego_log_is_the_observed_past_up_to_now():
    _, world = contract_inputs(context(make_session(route=STRAIGHT_ROUTE)), SensorConfig(), True, None)
    assert (world.ego_log.shape, world.step) == ((OBSERVATIONS, 11), OBSERVATIONS - 1)


def test_a_dense_route_keeps_every_waypoint_more_than_a_millimetre_apart():
    route = [[0.5 * k, 0.0, 0.0] for k in range(41)]  # every 0.5 m
    session = make_session(route=route, pose=level_pose)
    _, world = contract_inputs(context(session), SensorConfig(), True, None)
    x, y, _ = level_pose(20)
    np.testing.assert_allclose(world.road_map.lanes[0].centerline,
                               [[x - 10.0, y]] + [[x + 0.5 * k, y] for k in range(41)], rtol=0, atol=1e-9)


def test_a_hairpin_caps_the_mitre_at_five_half_widths():
    """Where the route turns back on itself, the boundary point lies 5 x 1.75 m from the vertex, not at infinity."""
    route = [[0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 0.5, 0.0]]
    _, world = contract_inputs(context(make_session(route=route, pose=level_pose)), SensorConfig(), True, None)
    lane = world.road_map.lanes[0]
    vertex = lane.centerline[2]
    for boundary in (lane.left_boundary, lane.right_boundary):
        assert np.linalg.norm(boundary[2] - vertex) == pytest.approx(5 * 1.75, abs=1e-9)


def test_an_empty_ground_truth_is_none_and_a_single_pose_is_the_log_after_now():
    session = make_session(route=STRAIGHT_ROUTE)
    session.ground_truth_in_rig = RigTrajectory.empty()
    _, world = contract_inputs(context(session), SensorConfig(), True, None)
    assert (world.ego_log.shape, world.step) == ((OBSERVATIONS, 11), OBSERVATIONS - 1)
    session.ground_truth_in_rig = RigTrajectory([NOW_US + 100_000], [Pose.from_xyz_yaw(1.0, 0.0, 0.0, 0.0)])
    _, world = contract_inputs(context(session), SensorConfig(), True, None)
    assert (world.ego_log.shape, world.step) == ((2, 11), 0)


def test_a_ground_truth_ending_on_the_10_hz_grid_keeps_its_last_pose():
    session = make_session(route=STRAIGHT_ROUTE)
    session.ground_truth_in_rig = RigTrajectory([NOW_US + 50_000 * k for k in range(61)],  # to exactly 3.0 s
                                                [Pose.from_xyz_yaw(0.4 * k, 0.0, 0.0, 0.0) for k in range(61)])
    _, world = contract_inputs(context(session), SensorConfig(), True, None)
    assert world.ego_log.shape == (31, 11)
    now = expected_states([20])[0]
    current = Pose.from_xyz_yaw(now[0], now[1], 0.0, now[2])
    np.testing.assert_allclose(world.ego_log[-1, :2], (current @ Pose.from_xyz_yaw(24.0, 0.0, 0.0, 0.0)).position[:2],
                               rtol=0, atol=1e-9)
