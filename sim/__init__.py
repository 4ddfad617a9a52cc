"""The simulator: its core data model and behaviours on numpy / shapely arrays, and the Gymnasium environments.

Core (imports nothing from `metrics`, `scenarios` or `agents`):

- `sim.scene`: `Scene` (map, 10 Hz ego log, agent tracks, lights, route, driving command) and `STEP_S`;
- `sim.geometry`: SE(2) frames, angle wrapping, box and ego-footprint corners, `VehicleParameters`;
- `sim.map`: `RoadMap`, lanes, lane graph and area polygons with vectorised queries;
- `sim.state`: the 11-float NAVSIM ego state layout and `AgentTracks` (agents over time);
- `sim.agent_input`: `AgentInput`, what an agent sees at a decision;
- `sim.world_view`: `WorldView`, what a privileged agent (PDM-Closed, log replay) may also read;
- `sim.route`: where the ego is on its route, and the route ahead of it;
- `sim.dynamics`: trajectory sampling, batch LQR tracking and the kinematic bicycle;
- `sim.traffic`: signal plans, lane-graph paths, IDM agents, crosswalk walkers, log replay;
- `sim.render`: the front camera and BEV rasters (OpenCV).

`sim.envs` holds the Gymnasium environments built on the core (and on `metrics`, `scenarios` and PDM-Closed from
`agents` for scoring and scene loading); importing it registers their ids.
"""
