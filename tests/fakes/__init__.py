"""Test fakes: in-process stand-ins for external services (see carla_server.py for a fake CARLA server)."""
