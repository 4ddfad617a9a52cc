"""Driving agents behind one interface (NAVSIM's AbstractAgent shape): baselines, PDM-Closed, DriveVLA-W0."""
