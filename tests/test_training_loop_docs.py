"""The training-loop code in README.md and docs/training-loop.md, run as written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lbw_sim import GuardedOptimizer, GuardSpec

ROOT = Path(__file__).resolve().parents[1]


def block(page: str, heading: str) -> str:
    """The first python block under the heading `heading` (any level) of `page`."""
    text = (ROOT / page).read_text(encoding="utf-8")
    marks = [f"\n{'#' * n} {heading}\n" for n in (2, 3)]
    mark = next(m for m in marks if m in text)
    section = text.split(mark, 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


class Blocks(torch.nn.Module):
    """A model as the blocks expect one: `model(x, y)` is the loss; `.blocks` to shard."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(8, 32), torch.nn.Linear(32, 1)])

    def forward(self, x, y):
        return F.mse_loss(self.blocks[1](torch.tanh(self.blocks[0](x))).float(), y)


def loader(n: int, seed: int = 0, nan_at: int | None = None) -> list:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = torch.randn(32, 8, generator=g)
        y = x[:, :1].sin() * (float("nan") if i == nan_at else 1.0)
        out.append((x, y))
    return out


def namespace(**extra) -> dict:
    torch.manual_seed(0)
    return {"torch": torch, "GuardedOptimizer": GuardedOptimizer, "GuardSpec": GuardSpec,
            "model": Blocks(), **extra}


def test_the_readme_loop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = namespace(loader=loader(30))
    exec(block("README.md", "In your training loop"), ns)
    assert len(ns["opt"].trace()) == 30 and (tmp_path / "run_trace.csv").is_file()


def test_the_docs_loop_holds_the_schedule_on_a_withheld_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(GuardSpec.default().to_yaml())
    ns = namespace(loader=loader(40, nan_at=25), spec_file=spec_file)
    exec(block("docs/training-loop.md", "In your training loop"), ns)
    trace = ns["opt"].trace()
    assert len(trace) == 40 and trace["safety_skip"].sum() + trace["skipped"].sum() == 1
    assert ns["sched"].last_epoch == 39
    assert (tmp_path / "run_trace.parquet").is_file()


def test_the_mixed_precision_block_sees_the_overflow_step():
    ns = namespace(loader=loader(40, nan_at=30))
    exec(block("README.md", "Mixed precision"), ns)
    trace = ns["opt"].trace()
    assert len(trace) == 40                       # the overflow step reached the guard
    assert (trace["skipped"] | trace["safety_skip"]).tolist() == [i == 30 for i in range(40)]
    assert all(torch.isfinite(p).all() for p in ns["model"].parameters())


def test_the_shadow_block_applies_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(GuardSpec.default().to_yaml())
    data = loader(40, nan_at=30)
    ns = namespace(loader=data, candidate=candidate)
    exec(block("README.md", "Shadow mode"), ns)
    plain = namespace()["model"]
    opt = torch.optim.AdamW(plain.parameters(), lr=3e-4)
    for x, y in data:
        loss = plain(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    bits = lambda m: [p.detach().view(torch.int32) for p in m.parameters()]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(bits(ns["model"]), bits(plain)))
    trace = ns["opt"].trace()
    assert trace["shadow"].all() and trace["skipped"][30]
    import pandas as pd
    assert pd.read_csv(tmp_path / "shadow_trace.csv")["shadow"].all()


@pytest.mark.slow
def test_the_fsdp2_block_on_two_ranks(tmp_path):
    from ranks import run_ranks
    run_ranks(ROOT / "tests/docs_fsdp_worker.py", [str(tmp_path)])
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0 == r1 and r0["rows"] == 40
    assert any((tmp_path / f).suffix == ".distcp" for f in os.listdir(tmp_path))
