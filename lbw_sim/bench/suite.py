"""The task suite: the LR stress grid over several model families, one folder per task.

    python -m lbw_sim stress --suite --quick      # seed 1, LRs 0.316x .. 31.6x each task's best
    python -m lbw_sim stress --suite              # seeds 1-3, LRs 0.1x .. 100x; rerun to resume
    python -m lbw_sim stress --suite --finetune   # the fine-tune tasks (FINETUNE_TASKS)

A task is a scenario override of `scenarios/lr_stress.yaml` (like `stress.QUICK`; `model`
and `data` are replaced whole) plus the AdamW-best LR its grid is centred on. The grid is
the same factors for every task, so "10x AdamW's best" means the same on each.

How each `best_lr` was found (tuning seed 0 only, never a reported seed): plain AdamW,
seed 0, the task's own steps and warm-up, LRs 1e-4 ... 1 in half-decades
(`tune_best_lr`); `best_lr` is the LR with the lowest final validation loss. The reported
seeds' own AdamW optimum may sit one grid point away; the report judges the goals against
the best AdamW cell it measured, as the single-task stress report does.

The sweep (seed 0, final validation loss per LR 1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2,
1e-1, 3.16e-1, 1; the best in brackets):
- gpt_synthetic   3.343 2.169 1.089 1.000 [0.997] 1.018 1.059 3.786 3.834
- gpt_prose       3.042 2.460 2.115 1.755 [1.224] 1.249 2.276 3.035 3.000
- gru_prose       2.976 2.392 1.714 0.999 0.700 [0.699] 0.977 1.933 3.188
- mlp_digits      1.851 0.358 0.143 [0.086] 0.124 0.095 0.252 1.107 2.358
- cnn_digits      2.307 2.302 2.156 1.141 0.312 [0.131] 0.165 0.288 2.360
- resmlp_teacher  0.406 0.325 0.304 0.262 [0.225] 0.333 0.537 3654 2.345
- noisy_quadratic 8.927 7.961 5.434 1.428 [0.093] 0.106 0.201 0.481 1.037

The fine-tune tasks (`--finetune`), the same sweep from the cached pretrained weights; the
loss the fine-tune starts from (the pretrained model on the fine-tune data) after the name:
- gpt_finetune    (2.498) 1.421 1.129 0.935 [0.882] 1.013 1.263 1.678 3.069 3.079
- gru_finetune    (2.053) 1.659 1.296 0.996 0.811 [0.736] 0.809 1.215 2.126 7.384
- resmlp_finetune (1.518) 0.616 0.379 0.253 0.222 [0.199] 0.440 1.347 94.79 3.211

A fine-tune task (`FINETUNE_TASKS`, `get_tasks(finetune=True)`) also says what is pretrained
first (`sim.pretrain.Pretraining`: seed 0, plain AdamW, cached in the user's cache folder and
rebuilt when missing or when its definition changes); its grid starts every seed from those
weights on the task's own shifted data, and each cell's summary row carries the loss it
started from (`start_val_loss`). Its pretraining LR is the from-scratch task's best LR.

Every task uses the scenario's AdamW (betas 0.9/0.95, weight decay 0.1 on matrices only,
linear warm-up then constant LR) and every arm of `stress.STRESS_ARMS`; Prodigy runs once per
seed at lr 1.0.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbw_sim.bench.stress import build_grid, run_stress
from lbw_sim.bench.stress_grid import StressGrid, StressResult
from lbw_sim.errors import SpecError
from lbw_sim.sim.pretrain import Pretraining, checkpoint
from lbw_sim.sim.prose import logbook_path, prose_path

#: LR factors relative to a task's AdamW-best LR (half-decades).
QUICK_FACTORS = (0.316, 1.0, 3.16, 10.0, 31.6)
FULL_FACTORS = (0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0)
#: The coarse seed-0 sweep that found each best_lr.
SWEEP_LRS = (1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2, 1e-1, 3.16e-1, 1.0)

_LM = {"steps": 300, "schedule": {"warmup": 30}, "batch_size": 32, "eval_every": 50,
       "eval_batches": 8}
_SMALL = {"steps": 300, "schedule": {"warmup": 30}, "batch_size": 64, "eval_every": 50}
_GPT = {"kind": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}
#: An order-1 chain: the order-2 corpus of lr_stress.yaml is still on its unigram plateau
#: after 300 steps of this model, which would make the task about escaping the plateau.
_SYNTH = {"kind": "synthetic", "vocab_size": 65, "order": 1, "seed": 0, "n_train": 200_000,
          "n_val": 20_000}


@dataclass(frozen=True)
class SuiteTask:
    """One task: what replaces/overrides the stress scenario, and its AdamW-best LR."""

    name: str
    family: str
    description: str
    best_lr: float
    replace: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    #: A fine-tune task: what is pretrained first (cached, `sim.pretrain`); the grid then
    #: starts from those weights on the task's own, shifted data.
    pretrain: Pretraining | None = None

    @property
    def finetune(self) -> bool:
        return self.pretrain is not None

    def lrs(self, quick: bool) -> list[float]:
        return [float(f"{self.best_lr * f:.3g}") for f in (QUICK_FACTORS if quick
                                                             else FULL_FACTORS)]

    def grid(self, *, quick: bool = False, seeds: list[int] | None = None,
             lrs: list[float] | None = None, arms: list[str] | None = None,
             steps: int | None = None, guard: str | None = None) -> StressGrid:
        """The task's stress grid: seeds 1-3 (quick: 1) unless given; `guard` is the guard
        arm's spec (default: the shipped default; a name or an absolute path)."""
        over = {**self.overrides, "name": f"suite/{self.name}",
                "lrs": lrs or self.lrs(quick), "seeds": seeds or ([1] if quick else [1, 2, 3])}
        if steps is not None:
            over["steps"] = steps
        if guard is not None:
            over["guard"] = guard
        replace = {k: (v() if callable(v) else v) for k, v in self.replace.items()}
        if self.pretrain is not None:   # built here, once, before any worker starts
            replace["model"] = {**replace["model"], "init": str(checkpoint(self.pretrain))}
        return build_grid(overrides=over, replace=replace, arms=arms)


def _prose() -> dict[str, Any]:
    return {"kind": "text", "path": str(prose_path())}


TASKS: tuple[SuiteTask, ...] = (
    SuiteTask("gpt_synthetic", "transformer LM",
              "2-layer char GPT (width 32, context 32) on an order-1 Markov corpus, 300 steps",
              1e-2, {"model": _GPT, "data": _SYNTH}, _LM),
    SuiteTask("gpt_prose", "transformer LM",
              "the same GPT on the shipped generated prose (lbw_sim/data/prose.txt), 300 steps",
              1e-2, {"model": _GPT, "data": _prose}, _LM),
    SuiteTask("gru_prose", "recurrent LM",
              "1-layer GRU char LM (embedding 32, hidden 64, context 32) on the prose",
              3.16e-2, {"model": {"kind": "rnn", "n_embd": 32, "hidden": 64, "block_size": 32},
                     "data": _prose}, _LM),
    SuiteTask("mlp_digits", "MLP classifier",
              "MLP 64-128-128-10 (GELU) on scikit-learn's digits, batch 64, 300 steps",
              3.16e-3, {"model": {"kind": "mlp", "hidden": [128, 128]}, "data": {"kind": "digits"}},
              _SMALL),
    SuiteTask("cnn_digits", "CNN classifier",
              "two 3x3 convs (16, 32 channels, no BatchNorm) on the 8x8 digits, 300 steps",
              3.16e-2, {"model": {"kind": "cnn", "channels": 16}, "data": {"kind": "digits"}},
              _SMALL),
    SuiteTask("resmlp_teacher", "residual MLP regression",
              "3 pre-LN residual blocks (width 64) regressing a random tanh teacher (MSE)",
              1e-2, {"model": {"kind": "resmlp", "width": 64, "depth": 3},
                     "data": {"kind": "teacher", "n_train": 4096, "n_val": 1024}}, _SMALL),
    SuiteTask("noisy_quadratic", "noisy quadratic",
              "100-d quadratic, eigenvalues 1e-2..1, Student-t(3) gradient noise, 300 steps",
              1e-2, {"model": {"kind": "noisy_quadratic", "dim": 100, "noise_scale": 0.1},
                     "data": {"kind": "none"}}, _SMALL),
)


def _logbook() -> dict[str, Any]:
    return {"kind": "text", "path": str(logbook_path())}


def _logbook_vocab() -> str:
    return str(logbook_path())


_RNN = {"kind": "rnn", "n_embd": 32, "hidden": 64, "block_size": 32}
_RES = {"kind": "resmlp", "width": 64, "depth": 3}
_TEACHER = {"kind": "teacher", "n_train": 4096, "n_val": 1024}

#: Fine-tune tasks: pretrained on one distribution (cached), then fine-tuned on a shifted one.
FINETUNE_TASKS: tuple[SuiteTask, ...] = (
    SuiteTask("gpt_finetune", "transformer LM (fine-tune)",
              "the 2-layer char GPT pretrained on the prose (1000 steps), fine-tuned 300 steps "
              "on the ship's log (lbw_sim/data/logbook.txt)",
              3.16e-3, {"model": _GPT, "data": _logbook}, _LM,
              Pretraining("gpt_prose", _GPT, _prose, 1000, 1e-2, vocab=_logbook_vocab)),
    SuiteTask("gru_finetune", "recurrent LM (fine-tune)",
              "the GRU char LM pretrained on the prose (1000 steps), fine-tuned 300 steps on "
              "the ship's log",
              1e-2, {"model": _RNN, "data": _logbook}, _LM,
              Pretraining("gru_prose", _RNN, _prose, 1000, 3.16e-2, vocab=_logbook_vocab)),
    SuiteTask("resmlp_finetune", "residual MLP regression (fine-tune)",
              "the residual MLP pretrained on a tanh teacher (1000 steps), fine-tuned 300 "
              "steps on that teacher moved halfway to another (data.shift 0.5)",
              1e-2, {"model": _RES, "data": {**_TEACHER, "shift": 0.5}}, _SMALL,
              Pretraining("resmlp_teacher", _RES, _TEACHER, 1000, 1e-2, batch_size=64)),
)


def get_tasks(names: list[str] | None = None, *, finetune: bool = False) -> list[SuiteTask]:
    """The suite's from-scratch tasks (`finetune`: its fine-tune tasks), or the named ones of
    that list (in suite order)."""
    pool = FINETUNE_TASKS if finetune else TASKS
    if not names:
        return list(pool)
    known = {t.name: t for t in pool}
    bad = [n for n in names if n not in known]
    if bad:
        which = "fine-tune task" if finetune else "task"
        other = {t.name for t in (TASKS if finetune else FINETUNE_TASKS)}
        hint = (" (a fine-tune task: add --finetune)" if bad[0] in other and not finetune
                else " (a from-scratch task: drop --finetune)" if bad[0] in other else "")
        raise SpecError("--tasks", f"unknown {which} {bad[0]!r}{hint}; known: "
                                   f"{', '.join(known)}")
    return [t for t in pool if t.name in names]


def run_suite(out: str | Path, *, quick: bool = False, workers: int = 1,
              tasks: list[SuiteTask] | None = None, seeds: list[int] | None = None,
              progress: bool = True, stop_event: threading.Event | None = None,
              steps: int | None = None, lrs: dict[str, list[float]] | None = None,
              arms: list[str] | None = None,
              write: Callable[[StressResult, Path], Any] | None = None,
              guard: str | None = None, finetune: bool = False,
              reuse: str | Path | None = None) -> dict[str, StressResult]:
    """Each task's grid (default: the from-scratch tasks, or with `finetune` the fine-tune
    ones) into `out/<task>/` (resumable like `run_stress`), its outputs
    written (`write`: default the tables, `stress_report.write_tables`; the CLI passes
    `viz.stress.write_report`, which adds the figures), then `out/table.md` with the goals
    per task and overall. `reuse`: a suite folder of the same tasks run with another guard,
    whose guard-free cells are taken rather than run again (`stress.reuse_cells`)."""
    from tqdm.auto import tqdm

    from lbw_sim.bench.stress import reuse_cells
    from lbw_sim.bench.stress_report import write_tables
    from lbw_sim.bench.suite_report import write_suite_table

    out, results = Path(out), {}
    tasks = tasks or get_tasks(finetune=finetune)
    bar = tqdm(tasks, desc="suite", unit="task", disable=None if progress else True)
    for task in bar:
        bar.set_postfix_str(task.name)
        grid = task.grid(quick=quick, seeds=seeds, steps=steps, arms=arms,
                         lrs=(lrs or {}).get(task.name), guard=guard)
        if reuse is not None and (Path(reuse) / task.name).is_dir():
            reuse_cells(grid, out / task.name, Path(reuse) / task.name)
        result = run_stress(grid, out / task.name, workers=workers, progress=progress,
                            stop_event=stop_event)
        (write or write_tables)(result, out / task.name)
        results[task.name] = result
        if stop_event is not None and stop_event.is_set():
            break
    bar.close()
    write_suite_table(out, [t for t in tasks if t.name in results])
    return results


def plain_adamw(task: SuiteTask, factor: float, seed: int = 0,
                lr_scale: Callable[[int], float] | None = None,
                ) -> tuple[Any, Iterator[tuple[int, Any]]]:
    """Plain AdamW on one task at `factor` x its best LR, built as the suite's `adamw` arm
    is (the scenario's optimizer groups, betas, weight decay, warm-up), for benchmarks that
    measure inside a run. Returns the built task (`.module`, `.evaluate()`) and its steps:
    each yields `(step, loss)` after the backward pass and before the update, which happens
    when the caller asks for the next step. `lr_scale(step)` multiplies the scheduled LR."""
    import torch

    from lbw_sim.sim.baselines import build_optimizer
    from lbw_sim.sim.tasks import build_task

    sc = task.grid(seeds=[seed], lrs=[task.best_lr], arms=["adamw"]).scenario
    built = build_task(sc, seed, torch.device("cpu"), {})
    o, lr = sc.optimizer, task.best_lr * factor
    opt = build_optimizer(built.module, lr, optimizer=o.kind, betas=tuple(o.betas),
                          weight_decay=o.weight_decay, eps=o.eps)

    def steps() -> Iterator[tuple[int, Any]]:
        batches = iter(built.batches) if built.batches is not None else None
        for step in range(sc.steps):
            scale = lr_scale(step) if lr_scale is not None else 1.0
            for g in opt.param_groups:
                g["lr"] = lr * scale * sc.schedule.factor(step, sc.steps)
            loss = built.loss(next(batches) if batches is not None else None, step)
            opt.zero_grad()
            loss.backward()
            yield step, loss
            opt.step()

    return built, steps()


def tune_best_lr(task: SuiteTask, out: str | Path, *, workers: int = 1,
                 lrs: tuple[float, ...] = SWEEP_LRS) -> tuple[float, dict[float, float]]:
    """The coarse seed-0 AdamW sweep behind `best_lr`: (best LR, final val loss per LR)."""
    grid = task.grid(seeds=[0], lrs=list(lrs), arms=["adamw"])
    result = run_stress(grid, out, workers=workers, progress=False)
    s = result.summary
    losses = {float(r.lr): float(r.final_val_loss) for r in s.itertuples()}
    finite = {lr: v for lr, v in losses.items() if math.isfinite(v)}
    return min(finite, key=finite.get), losses
