"""Scores as pure functions over arrays: NAVSIM PDMS / EPDMS and the CARLA Leaderboard driving score."""
