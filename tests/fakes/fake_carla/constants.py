"""Values more than one module of the fake CARLA server reads: the traffic-light states and CARLA's time-out text."""
from __future__ import annotations

import carla

_STATE = carla.TrafficLightState


def timeout_message(timeout_s: float, host: str, port: int) -> str:
    """CARLA's client time-out text, word for word."""
    return (f"time-out of {int(round(timeout_s * 1000))}ms while waiting for the simulator, make sure the simulator is "
            f"ready and connected to {host}:{port}")
