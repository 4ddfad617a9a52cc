"""Tests of the CARLA server backend: against the fake server, and against a real one when W0SIM_CARLA_HOST is set."""
