"""The CARLA server backend: a route driven on a running CARLA 0.9.15 / 0.9.16 server in synchronous mode."""
