"""The simulation bench: models, data, faults, baselines, scenarios, the runner.

- `device`     -- pick cuda -> mps -> cpu, describe it
- `landscapes` -- 2-D proxy losses (Rosenbrock, ill-conditioned, Rastrigin-like, edge of stability)
- `problems`   -- noisy quadratics with heavy-tailed gradient noise
- `models`     -- a tiny GPT (nanoGPT style), an MLP, a CNN, a GRU char LM, a residual MLP
- `data`       -- synthetic Markov text of known entropy rate, user text, digits,
                  teacher-student regression, batching
- `faults`     -- declarative faults (LR spikes, noise bursts, bad batches, NaN/inf, overflow)
- `baselines`  -- the arms: AdamW, clip-norm, ZClip, OLMo-style skip-step, the guard
- `competitors` -- Schedule-Free AdamW, StableAdamW, Prodigy; `arms.make_arm` builds any arm
- `scenarios`  -- Scenario dataclasses loaded and validated from scenarios/*.yaml
- `competitors` -- Schedule-Free AdamW, StableAdamW, Prodigy (their packages) as arms
- `runner`     -- run_scenario (every arm x lr x seed, traces, summary) and iter_run (live)
- `tasks`      -- what a cell trains (every model kind, incl. the suite's CNN, GRU, residual MLP)
- `suite`, `suite_report` -- the task suite (stress grid over model families), its goals
- `prose`      -- the generated English-like text shipped as lbw_sim/data/prose.txt

Everything here is torch code that follows the device of the tensors it is given, and it
stays free of any UI library.
"""
