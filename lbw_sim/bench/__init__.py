"""The benchmark harness: grids of simulation cells (`lbw_sim.sim`), run resumably on a
local process pool or Ray, and the goals they are judged by.

- `stress_grid`, `stress`, `stress_report`, `stress_job` -- the LR stress grid: its cells,
  results and files; running it; its report; a background run for the studio
- `suite`, `suite_report` -- the task suite (the stress grid over model families), its goals
- `fault_grid`, `fault_report`, `fault_job` -- the transient-fault benchmark, its goals, a
  background run
- `engine`      -- the one grid engine: cells with declared needs, run here or on an
  executor, streamed to the grid's ledger, stoppable, resumable
- `scenario`    -- a whole scenario (every arm x lr x seed) on one device (`lbw_sim run`)
- `verdict`     -- goal rows, their markdown and ✔/✘, the loss over seeds: one for every report
- `jobs`, `executors` -- background grid jobs; cells on a local process pool or Ray

Imports run one way: the harness uses `lbw_sim.sim`, never the reverse.
"""
