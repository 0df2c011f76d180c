"""The controller's plumbing: the config schema, checkpoints, MLflow tracking, the health guard, plots."""
