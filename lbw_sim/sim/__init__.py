"""The simulation bench: models, data, faults, baselines, scenarios, the runner."""
