"""One rank of the FSDP2 test: run by test_fsdp.py as a subprocess (RANK/WORLD_SIZE in env).

A small MLP sharded with `fully_shard` on a CPU mesh (gloo), the guard around torch's AdamW
(`decide_on` from argv). Three runs in one process group: 60 steps uninterrupted; 30 steps
and a torch.distributed.checkpoint save; a fresh model and optimizer that load it and run
to 60. A gradient spike sits in rank 1's batch only. Writes what each rank saw as JSON.
"""

import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lbw_sim import GuardedOptimizer, GuardSpec  # noqa: E402

SPIKE = (40, 41, 42)     # rank 1's batch only
STEPS, SAVE_AT = 60, 30


def build(mesh, decide_on: str):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(),
                                torch.nn.Linear(32, 32), torch.nn.Tanh(),
                                torch.nn.Linear(32, 1))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    inner = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1,
                              fused=decide_on == "device")
    return model, GuardedOptimizer(inner, GuardSpec.default(), decide_on=decide_on)


def train(model, opt, start: int, stop: int, rank: int, norms: list | None = None) -> None:
    for step in range(start, stop):
        g = torch.Generator().manual_seed(1000 * step + rank)
        x = torch.randn(16, 8, generator=g)
        y = x[:, :1].sin() * (300.0 if rank == 1 and step in SPIKE else 1.0)
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        if norms is not None:     # the true global norm, from the gathered full gradients
            full = torch.cat([p.grad.full_tensor().flatten() for p in model.parameters()])
            norms.append(float(full.norm()))
        opt.step(loss=loss)


def shards(model) -> list[float]:
    return torch.cat([p.to_local().detach().flatten() for p in model.parameters()]).tolist()


def main(decide_on: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))

    model, opt = build(mesh, decide_on)
    norms: list[float] = []
    train(model, opt, 0, STEPS, rank, norms)
    whole = opt.trace()

    model_b, opt_b = build(mesh, decide_on)
    train(model_b, opt_b, 0, SAVE_AT, rank)
    folder = [tempfile.mkdtemp() if rank == 0 else None]
    dist.broadcast_object_list(folder)
    dcp.save({"model": get_model_state_dict(model_b),
              "optim": get_optimizer_state_dict(model_b, opt_b.optimizer),
              **opt_b.dcp_state()}, checkpoint_id=folder[0])

    model_c, opt_c = build(mesh, decide_on)
    state = {"model": get_model_state_dict(model_c),
             "optim": get_optimizer_state_dict(model_c, opt_c.optimizer),
             **opt_c.dcp_state()}
    dcp.load(state, checkpoint_id=folder[0])
    set_model_state_dict(model_c, state["model"])
    set_optimizer_state_dict(model_c, opt_c.optimizer, state["optim"])
    opt_c.load_dcp_state(state)
    train(model_c, opt_c, SAVE_AT, STEPS, rank)
    resumed = opt_c.trace()

    cols = ["regime", "lr_scale", "skipped", "transition"]
    Path(out).write_text(json.dumps({
        "trace": {c: whole[c].astype(str).tolist() for c in cols},
        "grad_norm": whole["grad_norm"].tolist(),
        "true_norm": norms,
        "loss": whole["loss"].tolist(),
        "shards": shards(model),
        "resumed_trace": {c: resumed[c].astype(str).tolist() for c in cols},
        "resumed_grad_norm": resumed["grad_norm"].tolist(),
        "resumed_shards": shards(model_c),
    }))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
