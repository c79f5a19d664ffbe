"""The face search task and the pipelines the CLI calls: search, derive, retrain, compare,
tune and demo."""
