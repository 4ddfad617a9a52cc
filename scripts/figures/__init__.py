"""The parts of scripts/check_figures.py: where figures are and how they read, tolerances, measurements, the registry."""
