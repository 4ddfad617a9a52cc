"""w0sim: closed-loop simulation and NAVSIM / CARLA-style evaluation of end-to-end driving policies."""

__version__ = "0.1.0"
