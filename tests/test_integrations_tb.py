"""A guarded run written to TensorBoard imports back and replays to the same regimes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorboard",
                    reason="tensorboard is not installed (pip install .[tensorboard])")

import torch  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from lbw_sim import GuardedOptimizer, GuardSpec, load_trace, replay  # noqa: E402
from lbw_sim.integrations.tensorboard import write_trace  # noqa: E402


def guarded_run(steps: int = 160) -> GuardedOptimizer:
    """A tiny regression with a gradient spike at 80 and NaN gradients at 120-122."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3), GuardSpec.default())
    x, y = torch.randn(steps, 16, 8), torch.randn(steps, 16, 1)
    for step in range(steps):
        loss = torch.nn.functional.mse_loss(model(x[step]), y[step])
        opt.zero_grad()
        loss.backward()
        for p in model.parameters():
            if step == 80:
                p.grad.mul_(1e4)
            if 120 <= step <= 122:
                p.grad.fill_(math.nan)
        opt.step(loss=loss)
    return opt


def test_round_trip_replays_to_the_same_regimes(tmp_path):
    opt = guarded_run()
    live = opt.trace()
    regime = live.set_index("step")["regime"].astype(str)
    assert (regime.loc[80:81] != opt.spec.initial).any()              # the gradient spike
    assert regime.loc[120] != opt.spec.initial and live.set_index("step").loc[120, "skipped"]
    assert regime.nunique() >= 3                                       # several regimes drawn
    writer = SummaryWriter(str(tmp_path))
    done = write_trace(writer, live.iloc[:100], opt.spec)        # written in two goes,
    done = write_trace(writer, live, opt.spec, start=done)       # as a live run would
    writer.close()
    assert done == len(live)

    back = load_trace(tmp_path)
    assert len(back) == len(live)
    np.testing.assert_array_equal(back["loss"], live["loss"])    # double precision: exact
    np.testing.assert_array_equal(back["grad_norm"], live["grad_norm"])
    replayed = replay(back, GuardSpec.default())
    assert list(replayed["regime"].astype(str)) == list(live["regime"].astype(str))
    np.testing.assert_array_equal(replayed["lr_scale"], live["lr_scale"])


def test_scalars_and_transition_texts(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    opt = guarded_run()
    live = opt.trace()
    writer = SummaryWriter(str(tmp_path))
    write_trace(writer, live, opt.spec)
    writer.close()
    acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    tags = set(acc.Tags()[ea.SCALARS]) | set(acc.Tags()[ea.TENSORS])
    expected = {"guard/regime", "guard/lr_scale", "guard/skipped",
                *(f"guard/{s}" for s in opt.spec.signals), "train/loss", "train/grad_norm"}
    assert expected <= tags
    names = list(opt.spec.regimes)
    regimes = [names[int(e.value)] for e in acc.Scalars("guard/regime")]
    assert regimes == list(live["regime"].astype(str))
    skipped = pd.Series({e.step: e.value for e in acc.Scalars("guard/skipped")})
    assert skipped.loc[120] == 1.0 and skipped.loc[0] == 0.0
    texts = acc.Tensors("guard/transition/text_summary")
    fired = live[live["transition"] != ""]
    assert [t.step for t in texts] == list(fired["step"])
    for text, row in zip(texts, fired.itertuples()):
        shown = text.tensor_proto.string_val[0].decode()
        assert row.transition in shown and row.regime in shown and row.cause in shown
    assert any("grad_z=" in t.tensor_proto.string_val[0].decode() for t in texts)  # step 80


def test_the_guards_own_signals_are_written_and_replay_is_only_the_fallback(
        tmp_path, guard_log_reads):
    from tensorboard.backend.event_processing import event_accumulator as ea

    opt = guarded_run()
    written = {}
    for name, trace in (("own", opt.trace(signals=True)), ("replayed", opt.trace())):
        before = guard_log_reads.replays
        writer = SummaryWriter(str(tmp_path / name))
        assert write_trace(writer, trace, opt.spec) == len(trace)
        writer.close()
        written[name] = guard_log_reads.replays - before
        acc = ea.EventAccumulator(str(tmp_path / name), size_guidance={ea.SCALARS: 0})
        acc.Reload()
        live = opt.trace(signals=True).set_index("step")
        for signal in opt.spec.signals:
            got = pd.Series({e.step: e.value for e in acc.Scalars(f"guard/{signal}")})
            want = live[signal].dropna()
            assert list(got.index) == list(want.index), signal
            np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6)
    assert written == {"own": 0, "replayed": 1}


# --- the designer's export: the lines that use a spec in each stack --------------------------

def test_usage_snippets_load_the_exported_file_and_the_pytorch_one_runs(tmp_path):
    from lbw_sim.integrations.snippets import usage

    spec = GuardSpec.default()
    (tmp_path / "exported.yaml").write_text(spec.to_yaml())
    code = usage(str(tmp_path / "exported.yaml"))
    assert set(code) == {"PyTorch", "Hugging Face Trainer", "Lightning"}
    for text in code.values():
        compile(text, "<snippet>", "exec")
        assert f'GuardSpec.load("{tmp_path / "exported.yaml"}")' in text
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    loader = [(torch.randn(8, 4), torch.randint(3, (8,))) for _ in range(5)]
    ns = {"model": model, "loader": loader}
    exec(code["PyTorch"], ns)
    assert len(ns["opt"].trace()) == 5 and ns["opt"].spec.hash == spec.hash
    with pytest.raises(ValueError, match="Python string"):
        usage('evil".yaml')


def test_designer_shows_the_snippets_next_to_the_yaml():
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parents[1]
    at = AppTest.from_file(str(root / "app.py"), default_timeout=120).run()
    at = at.switch_page("pages/designer.py").run()
    assert not at.exception
    shown = [c.value for c in at.code]
    name = GuardSpec.default().name
    assert any("GuardedTrainer(" in c and f"{name}.yaml" in c for c in shown)
    assert any("GuardCallback(" in c for c in shown) and any("opt.step(loss=loss)" in c
                                                             for c in shown)


def test_readme_section_runs_as_written(readme_block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {"opt": guarded_run()}
    exec(readme_block("TensorBoard"), ns)        # its assert is the round trip
    assert (tmp_path / "runs" / "guarded").is_dir()
