"""Simulator core: geometry, road map, state arrays, dynamics, traffic and renderers (numpy only)."""
