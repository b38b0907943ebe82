"""FSDP2 on CPU/gloo, 2 processes: the guard's norm is the global one, every rank decides
alike through a spike in one rank's batch, and a torch.distributed.checkpoint resume equals
the uninterrupted run (tests/fsdp_worker.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
from ranks import run_ranks

HERE = Path(__file__).resolve().parent


def ranks_output(decide_on: str, tmp_path: Path) -> list[dict]:
    run_ranks(HERE / "fsdp_worker.py", [decide_on, str(tmp_path / "rank{rank}.json")])
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
@pytest.mark.parametrize("decide_on", ["host", "device"])
def test_fsdp2_global_norm_same_decisions_and_dcp_resume(decide_on, tmp_path):
    r0, r1 = ranks_output(decide_on, tmp_path)
    # the guard's norm is the norm of the whole gradient, not of a shard
    np.testing.assert_allclose(r0["grad_norm"], r0["true_norm"], rtol=1e-5)
    assert r0["grad_norm"] == r1["grad_norm"] and r0["loss"] == r1["loss"]
    # both ranks take every decision alike; rank 1's spike moved both
    assert r0["trace"] == r1["trace"]
    regimes = r0["trace"]["regime"]
    assert regimes[39] == "nominal" and any(r != "nominal" for r in regimes[40:43])
    assert "True" in r0["trace"]["skipped"][40:43]
    # the sharded run resumed from a DCP checkpoint is the uninterrupted one
    for r in (r0, r1):
        assert r["resumed_trace"] == r["trace"]
        assert r["resumed_grad_norm"] == r["grad_norm"]
        assert r["resumed_shards"] == r["shards"]
        assert np.isfinite(r["shards"]).all()
    assert r0["shards"] != r1["shards"]            # each rank holds its own shard
