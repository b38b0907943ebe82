"""The guard wing: spec, conditions, signals, engine, sweeps (no torch) and optim (torch)."""
