"""Where scenes come from: the procedural generator, real maps and logs, and the scene file format."""
