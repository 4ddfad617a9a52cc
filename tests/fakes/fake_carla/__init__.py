"""The FAKE CARLA 0.9.16 server of the tests, in modules; import it through tests.fakes.carla_server."""
