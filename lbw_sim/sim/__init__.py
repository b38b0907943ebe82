"""The simulation bench: models, data, faults, arms, scenarios and the runner that trains
one cell (arm x lr x seed) of a scenario and traces every step.

- `device`      -- pick cuda -> mps -> cpu, describe it
- `landscapes`  -- 2-D proxy losses (Rosenbrock, ill-conditioned, Rastrigin-like, edge of stability)
- `problems`    -- noisy quadratics with heavy-tailed gradient noise
- `models`      -- a tiny GPT (nanoGPT style), an MLP, a CNN, a GRU char LM, a residual MLP
- `data`        -- synthetic Markov text of known entropy rate, user text, digits,
                   teacher-student regression, batching
- `prose`       -- the generated English-like text shipped as lbw_sim/data/prose.txt
- `faults`      -- declarative faults (LR spikes, noise bursts, bad batches, NaN/inf, overflow)
- `baselines`   -- the arms: AdamW, clip-norm, ZClip, OLMo-style skip-step, the guard
- `competitors` -- Schedule-Free AdamW, StableAdamW, Prodigy (their packages) as arms
- `arms`        -- `make_arm` builds any arm; `is_guard_arm` says which run the guard
- `scenarios`   -- Scenario dataclasses loaded and validated from scenarios/*.yaml
- `tasks`       -- what a cell trains (every model kind, incl. the suite's CNN, GRU, residual MLP)
- `runner`      -- one cell step by step (`Run`, `iter_run`: traced rows, live) and its summary
- `live`        -- a guarded and a plain run stepped in a worker thread (the Live page)
- `trajectories` -- plain vs guarded optimizer paths on 2-D landscapes

The benchmark harness built on it (grids, the task suite, the fault benchmark, their
reports) is `lbw_sim.bench`. Everything here is torch code that follows the device of the
tensors it is given, and it stays free of any UI library.
"""
