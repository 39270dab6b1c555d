"""Training: the config, the loop, the β schedules, checkpoints and the run directory."""
