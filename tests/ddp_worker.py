"""One rank of the DDP test: run by test_ddp.py as a subprocess (RANK/WORLD_SIZE in env)."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lbw_sim import GuardedOptimizer, GuardSpec  # noqa: E402


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DDP(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                                    torch.nn.Linear(16, 1)))
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=3e-3), GuardSpec.default())
    for step in range(160):
        g = torch.Generator().manual_seed(100 * step + rank)
        x = torch.randn(32, 8, generator=g)
        y = x[:, :1].sin()
        if rank == 1 and step == 120:
            y = y * 200.0                      # a corrupted batch on one rank only
        if rank == 1 and step in (140, 141):
            x = x * float("nan")               # NaN on one rank only
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
    trace = opt.trace()
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    Path(out).write_text(json.dumps({
        "regime": trace["regime"].astype(str).tolist(),
        "lr_scale": trace["lr_scale"].tolist(),
        "skipped": trace["skipped"].tolist(),
        "params": params.tolist(),
        "finite": bool(torch.isfinite(params).all()),
    }))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
