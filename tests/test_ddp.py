"""DDP on gloo, 2 processes: a fault in one rank's batch; both ranks decide alike."""

import json
from pathlib import Path

import pytest
import torch.distributed as dist
from ranks import run_ranks

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_ranks_take_identical_decisions(tmp_path):
    run_ranks(HERE / "ddp_worker.py", [str(tmp_path / "rank{rank}.json")], timeout=240)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["regime"] == r1["regime"]
    assert r0["lr_scale"] == r1["lr_scale"] and r0["skipped"] == r1["skipped"]
    assert r0["params"] == r1["params"] and r0["finite"]
    assert r0["regime"][120] != "nominal"        # rank 1's corrupted batch moved both ranks
    assert r0["regime"][140] != "nominal" and r0["skipped"][140]
