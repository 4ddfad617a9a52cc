"""Torch models of the DriveVLA-W0 family: image tokenizers, VLA backbone, world models, action expert."""
