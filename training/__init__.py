"""Policy training from simulator data: collection, datasets, stage 0-2 trainers, scaling experiment."""
