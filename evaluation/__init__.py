"""Evaluation: scoring items through the rollout actors, the metrics of a labelled set, reports and the
classical baseline; used by validation during training, evaluate.py and score.py."""
