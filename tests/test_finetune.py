"""The suite's fine-tune tasks: the cached pretraining, the shifted data, the start loss."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

from lbw_sim.bench.stress import run_stress
from lbw_sim.bench.suite import FINETUNE_TASKS, TASKS, get_tasks
from lbw_sim.bench.suite_report import finetune_starts
from lbw_sim.cli import main
from lbw_sim.errors import SpecError
from lbw_sim.sim import pretrain as pt
from lbw_sim.sim.data import teacher_student
from lbw_sim.sim.prose import PROSE_PATH, logbook_path
from lbw_sim.sim.scenarios import Scenario
from lbw_sim.sim.tasks import build_task

TINY_GPT = {"kind": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "block_size": 8}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("LBW_SIM_CACHE", str(root))
    return root


def tiny(task, pretrain_steps=3):
    """`task` with a few pretraining steps (its definition otherwise unchanged)."""
    return dataclasses.replace(task, pretrain=dataclasses.replace(task.pretrain,
                                                                  steps=pretrain_steps))


def test_cache_dir_honours_the_override_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LBW_SIM_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pt.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("LBW_SIM_CACHE")
    assert pt.cache_dir() == tmp_path / "xdg" / "lbw_sim"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pt.cache_dir() == tmp_path / "home" / ".cache" / "lbw_sim"


def test_checkpoint_is_built_once_rebuilt_when_missing_and_keyed_by_the_definition(
        cache, monkeypatch):
    p = pt.Pretraining("tiny", TINY_GPT, {"kind": "text", "path": str(PROSE_PATH)}, 2, 1e-2,
                       batch_size=4, warmup=1, vocab=str(logbook_path()))
    path = pt.checkpoint(p)
    assert path.parent == cache and path.is_file()
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) >= {"state_dict", "val_loss"} and math.isfinite(ckpt["val_loss"])
    built = []
    real = pt.pretrain
    monkeypatch.setattr(pt, "pretrain", lambda q: built.append(q) or real(q))
    assert pt.checkpoint(p) == path and not built            # cached: not trained again
    path.unlink()
    assert pt.checkpoint(p) == path and len(built) == 1       # missing: rebuilt
    other = pt.checkpoint(dataclasses.replace(p, steps=3))
    assert other != path and len(built) == 2                  # changed definition: new file
    assert sorted(f.name for f in cache.iterdir()) == sorted([path.name, other.name])


def test_pretraining_reads_its_text_with_the_fine_tune_vocabulary(tmp_path):
    prose, log = PROSE_PATH.read_text(encoding="utf-8"), logbook_path().read_text("utf-8")
    assert set(prose) == set(log)                             # one alphabet: the shift is style
    p = pt.Pretraining("x", TINY_GPT, {"kind": "text", "path": str(PROSE_PATH)}, 1, 1e-2,
                       batch_size=2, warmup=1, vocab=str(logbook_path()))
    state, _ = pt.pretrain(p)
    assert state["lm_head.weight"].shape[0] == len(set(log))
    wider = tmp_path / "wider.txt"                            # ids follow the vocabulary's text
    wider.write_text(log + "0123", encoding="utf-8")
    state, _ = pt.pretrain(dataclasses.replace(p, vocab=str(wider)))
    assert state["lm_head.weight"].shape[0] == len(set(log)) + 4
    small = tmp_path / "abc.txt"
    small.write_text("abc abc abc\n" * 20, encoding="utf-8")
    with pytest.raises(SpecError, match="lacks the characters"):
        pt.pretrain(dataclasses.replace(p, vocab=str(small)))


def test_shift_moves_the_teacher_and_keeps_the_inputs():
    base, same = teacher_student(64, 16, seed=3), teacher_student(64, 16, seed=3, shift=0.0)
    moved = teacher_student(64, 16, seed=3, shift=0.5)
    assert torch.equal(base.y_train, same.y_train) and torch.equal(base.x_train, moved.x_train)
    assert not torch.allclose(base.y_train, moved.y_train)
    corr = torch.corrcoef(torch.stack([base.y_train, moved.y_train]))[0, 1]
    assert 0.3 < float(corr) < 0.98                          # related, not the same task
    with pytest.raises(SpecError, match="data.shift"):
        teacher_student(64, 16, shift=1.5)


def test_scenario_refuses_a_shift_off_the_teacher_and_a_missing_checkpoint(tmp_path):
    base = {"name": "x", "model": {"kind": "mlp"}, "data": {"kind": "digits", "shift": 0.3}}
    with pytest.raises(SpecError, match="data.shift"):
        Scenario.from_dict(base)
    missing = {**base, "data": {"kind": "digits"},
               "model": {"kind": "mlp", "init": str(tmp_path / "none.pt")}}
    with pytest.raises(SpecError, match="model.init"):
        Scenario.from_dict(missing)


def test_a_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)
    sc = Scenario.from_dict({"name": "x", "model": {"kind": "mlp", "init": str(bad)},
                             "data": {"kind": "digits"}})
    with pytest.raises(SpecError, match="bad.pt: not a checkpoint of this model"):
        build_task(sc, 0, torch.device("cpu"))


def test_three_fine_tune_families_each_with_its_own_best_lr():
    assert len({t.family for t in FINETUNE_TASKS}) >= 3
    assert all(t.finetune for t in FINETUNE_TASKS) and not any(t.finetune for t in TASKS)
    kinds = {t.replace["model"]["kind"] for t in FINETUNE_TASKS}
    assert {"gpt", "rnn", "resmlp"} <= kinds
    assert get_tasks(finetune=True) == list(FINETUNE_TASKS)
    for t in FINETUNE_TASKS:
        lrs = t.lrs(quick=False)
        assert lrs[0] == pytest.approx(0.1 * t.best_lr, rel=1e-2)
        assert lrs[-1] == pytest.approx(100 * t.best_lr, rel=1e-2)


def test_selecting_a_task_from_the_other_list_says_which_flag_it_needs():
    with pytest.raises(SpecError, match="add --finetune"):
        get_tasks(["gpt_finetune"])
    with pytest.raises(SpecError, match="drop --finetune"):
        get_tasks(["gpt_prose"], finetune=True)


@pytest.mark.parametrize("task", FINETUNE_TASKS, ids=lambda t: t.name)
def test_a_fine_tune_cell_starts_from_the_pretrained_weights_and_reports_that_loss(
        task, cache, tmp_path):
    t = tiny(task)
    grid = t.grid(seeds=[1, 2], lrs=[t.best_lr], arms=["adamw"], steps=2)
    assert grid.scenario.model["init"].startswith(str(cache))
    s = run_stress(grid, tmp_path / "out", progress=False).summary
    start = s["start_val_loss"].astype(float)
    assert start.notna().all() and start.nunique() == 1      # every seed starts alike
    loaded = build_task(grid.scenario, 1, torch.device("cpu"))
    assert loaded.start_loss == pytest.approx(float(start.iloc[0]), rel=1e-5)
    fresh = build_task(grid.scenario.replace(model={k: v for k, v in grid.scenario.model.items()
                                                    if k != "init"}), 1, torch.device("cpu"))
    assert fresh.start_loss is None
    assert fresh.evaluate() != pytest.approx(loaded.start_loss, rel=1e-4)   # weights loaded


def test_finetune_starts_counts_cells_ending_above_their_start():
    s = pd.DataFrame({"arm": ["adamw"] * 3 + ["guard"] * 3, "lr": [0.1, 1.0, 10.0] * 2,
                      "final_val_loss": [1.0, 2.5, math.nan, 1.0, 1.5, 1.9],
                      "start_val_loss": [2.0] * 6})
    f = finetune_starts(s).set_index("arm")
    assert f.loc["adamw", "above_start"] == 2 and f.loc["adamw", "worst_lr"] == 1.0
    assert f.loc["guard", "above_start"] == 0 and math.isnan(f.loc["guard", "worst_lr"])
    assert finetune_starts(s.drop(columns="start_val_loss")).empty


def test_cli_finetune_needs_the_suite(capsys):
    assert main(["stress", "--finetune", "--quick"]) != 0
    assert "--finetune" in capsys.readouterr().err


def test_cli_finetune_runs_the_selected_fine_tune_task(cache, tmp_path, monkeypatch, capsys):
    import lbw_sim.bench.suite as suite

    small = tuple(tiny(t) for t in suite.FINETUNE_TASKS)
    monkeypatch.setattr(suite, "FINETUNE_TASKS", small)
    out = tmp_path / "ft"
    real = suite.SuiteTask.grid

    def short(self, **kw):
        return real(self, **{**kw, "steps": 2, "arms": ["adamw"]})

    monkeypatch.setattr(suite.SuiteTask, "grid", short)
    rc = main(["stress", "--suite", "--finetune", "--tasks", "resmlp_finetune", "--quick",
               "--quiet", "--workers", "1", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert (out / "resmlp_finetune" / "summary.csv").is_file()
    assert not (out / "gpt_finetune").exists()
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "ended above the loss they started from" in table


# --- the ReduceLROnPlateau arm ---------------------------------------------------------------

def _quadratic():
    return torch.nn.Linear(4, 1)


def _feed(arm, losses, base_lr=1e-2):
    """The runner's loop: set the scheduled LR, step with this loss; the LRs applied."""
    applied = []
    for loss in losses:
        for g in arm.param_groups:
            g["lr"] = base_lr
        arm.step(loss=torch.tensor(loss))
        applied.append(arm.param_groups[0]["lr"])
    return applied


def test_plateau_halves_the_lr_after_patience_windows_without_progress():
    from lbw_sim.sim.arms import make_arm

    arm = make_arm("plateau", _quadratic(), 1e-2, every=10, patience=1)
    applied = _feed(arm, [1.0] * 50)
    # windows end at steps 10, 20, 30, 40, 50: the 1st sets the best, the 3rd and 5th cut
    assert applied[:30] == [1e-2] * 30
    assert applied[30:50] == pytest.approx([5e-3] * 20)
    assert arm.scale == pytest.approx(0.25)
    tr = arm.trace()
    assert tr["lr_scale"].tolist() == pytest.approx([1.0] * 30 + [0.5] * 20)
    assert arm.last_row()["lr_scale"] == pytest.approx(0.5)


def test_plateau_leaves_an_improving_run_alone_and_never_compounds_an_lr_left_as_is():
    from lbw_sim.sim.arms import make_arm

    arm = make_arm("plateau", _quadratic(), 1e-2, every=5, patience=0)
    assert _feed(arm, [1.0 / (k + 1) for k in range(40)]) == [1e-2] * 40
    stuck = make_arm("plateau", _quadratic(), 1e-2, every=2, patience=0)
    for _ in range(6):                                       # nobody resets the LR
        stuck.step(loss=torch.tensor(1.0))
    # cuts after steps 4 and 6; steps 5-6 ran at half the LR (compounded: a quarter)
    assert stuck.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5) and stuck.scale == 0.25
    with pytest.raises(ValueError, match="needs step"):
        stuck.step()


def test_plateau_is_a_stress_arm_of_every_suite_grid(cache):
    from lbw_sim.bench.stress_grid import STRESS_ARMS

    assert "plateau" in STRESS_ARMS and "cosine" in STRESS_ARMS and "lr_matched" in STRESS_ARMS
    assert "plateau" in TASKS[0].grid(quick=True).arms


@pytest.mark.slow
def test_tune_best_lr_reproduces_a_recorded_fine_tune_sweep(cache, tmp_path):
    """The seed-0 sweep behind a fine-tune task's best_lr, from a freshly pretrained
    checkpoint (the cheapest task, three of its LRs): the start loss and final losses that
    suite.py's docstring records, and the task's best_lr (~10 s)."""
    import lbw_sim.bench.suite as suite
    from lbw_sim.bench.suite import SWEEP_LRS, tune_best_lr

    task = get_tasks(["resmlp_finetune"], finetune=True)[0]
    line = next(ln for ln in suite.__doc__.splitlines() if ln.startswith("- resmlp_finetune"))
    start, *recorded = [float(v.strip("[]()")) for v in line.split()[2:]]
    lrs = (SWEEP_LRS[0], task.best_lr, SWEEP_LRS[-1])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                 # as the sweep ran (the CLI's)
    try:
        best, losses = tune_best_lr(task, tmp_path / "sweep", lrs=lrs)
    finally:
        torch.set_num_threads(threads)
    assert best == task.best_lr and len(list(cache.iterdir())) == 1
    for lr in lrs:
        assert losses[lr] == pytest.approx(recorded[SWEEP_LRS.index(lr)], abs=6e-4), lr
    s = pd.read_csv(tmp_path / "sweep" / "summary.csv")
    assert s["start_val_loss"].iloc[0] == pytest.approx(start, abs=6e-4)
