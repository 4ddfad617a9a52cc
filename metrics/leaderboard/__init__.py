"""CARLA Leaderboard 2.x route scoring split by responsibility; the public API is re-exported by metrics.driving_score."""
