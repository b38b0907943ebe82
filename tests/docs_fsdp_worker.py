"""One rank running the README's FSDP2 block as written (test_training_loop_docs.py)."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_training_loop_docs import Blocks, block, loader  # noqa: E402

from lbw_sim import GuardedOptimizer, GuardSpec  # noqa: E402


def main(folder: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    ns = {"torch": torch, "GuardedOptimizer": GuardedOptimizer, "GuardSpec": GuardSpec,
          "model": Blocks(), "loader": loader(40, seed=rank),
          "mesh": init_device_mesh("cpu", (dist.get_world_size(),)),
          "checkpoint_dir": folder}
    exec(block("README.md", "FSDP2"), ns)
    trace = ns["opt"].trace()
    Path(folder, f"rank{rank}.json").write_text(json.dumps({
        "rows": len(trace), "regime": trace["regime"].astype(str).tolist(),
        "grad_norm": trace["grad_norm"].tolist()}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
