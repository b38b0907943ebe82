"""The guard inside the training stacks people use (optional extras; nothing here is imported
by the rest of `lbw_sim`).

- `lbw_sim.integrations.hf` — `GuardedTrainer` / `GuardMixin` for `transformers.Trainer`
  (`pip install lbw-sim[hf]`);
- `lbw_sim.integrations.lightning` — `GuardCallback` for `lightning.pytorch.Trainer`
  (`pip install lbw-sim[lightning]`);
- `lbw_sim.integrations.tensorboard` — `write_trace` to a `SummaryWriter`
  (`pip install lbw-sim[tensorboard]`);
- `lbw_sim.integrations.metrics` — the flat per-step metrics all three log (one declaration);
- `lbw_sim.integrations.snippets` — the few lines that use a spec in each stack (the
  designer's export).
"""
