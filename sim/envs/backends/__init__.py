"""Simulator backends behind the environments: the embedded one (numpy) and, later, a CARLA server."""
