"""The guard's device path on a GPU: a ~100M-parameter GPT, plain fused AdamW vs guarded.

Two copies of one GPT-2-small-shaped model (12 layers, 12 heads, width 768, context 512,
~100M parameters with a 32k vocabulary), bf16 autocast, torch's fused AdamW; one copy
wrapped in `GuardedOptimizer(decide_on="device")` with the default spec. The arms run
interleaved in blocks of steps (so clock drift and thermal state hit both alike), each block
timed with CUDA events. Syncs are counted with `torch.cuda.set_sync_debug_mode("warn")`
around the guarded `step()` calls (the loss is never read in the timed loop). Prints the
step-time ratio guarded / plain and the syncs per guarded step, then one JSON line.

    python benchmarks/gpu_step.py [--steps 200] [--block 10]
    python benchmarks/gpu_step.py --smoke      # CPU or GPU, a tiny model, seconds

Without CUDA only `--smoke` runs (on the CPU, where it counts the profiler's
`aten::_local_scalar_dense` per step instead of syncs).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lbw_sim import GuardedOptimizer, GuardSpec  # noqa: E402
from lbw_sim.sim.models import GPT, GPTConfig  # noqa: E402

FULL = GPTConfig(vocab_size=32768, block_size=512, n_layer=12, n_head=12, n_embd=768)
SMOKE = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)


def build(cfg: GPTConfig, device: str):
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    twin = copy.deepcopy(model)
    plain = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    inner = torch.optim.AdamW(twin.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    guarded = GuardedOptimizer(inner, GuardSpec.default(), decide_on="device")
    return (model, plain), (twin, guarded)


def one_step(model, opt, x, y, device: str) -> None:
    with torch.autocast(device, dtype=torch.bfloat16):
        _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step(loss=loss) if isinstance(opt, GuardedOptimizer) else opt.step()


def batches(cfg: GPTConfig, n: int, batch: int, device: str):
    g = torch.Generator(device="cpu").manual_seed(1)
    for _ in range(n):
        t = torch.randint(cfg.vocab_size, (batch, cfg.block_size + 1), generator=g)
        yield t[:, :-1].to(device), t[:, 1:].to(device)


def count_syncs(fn) -> int:
    """Synchronising CUDA calls made by `fn` (sync debug mode 'warn' names each one)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def cpu_reads(fn) -> int:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.name == "aten::_local_scalar_dense" for e in prof.events())


def run_cuda(steps: int, block: int, batch: int) -> dict:
    arms = build(FULL, "cuda")
    params = sum(p.numel() for p in arms[0][0].parameters())
    data = list(batches(FULL, 2 * block, batch, "cuda"))
    for arm in arms:                                   # warm-up: kernels, allocator, state
        for x, y in data[:5]:
            one_step(*arm, x, y, "cuda")
    torch.cuda.synchronize()
    times = {"plain": [], "guarded": []}
    syncs = 0
    for b in range(steps // block):
        for name, (model, opt) in zip(("plain", "guarded")[::(-1) ** b],
                                      arms[::(-1) ** b]):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            if name == "guarded":
                for x, y in data[:block]:
                    syncs += count_syncs(lambda: one_step(model, opt, x, y, "cuda"))  # noqa: B023
            else:
                for x, y in data[:block]:
                    one_step(model, opt, x, y, "cuda")
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end) / block)
    plain, guarded = (sorted(times[k])[len(times[k]) // 2] for k in ("plain", "guarded"))
    trace = arms[1][1].trace()
    return {"device": torch.cuda.get_device_name(), "params_M": round(params / 1e6, 1),
            "steps_per_arm": steps, "plain_ms": round(plain, 3), "guarded_ms": round(guarded, 3),
            "ratio": round(guarded / plain, 4), "syncs_per_step": syncs / steps,
            "nominal_share": float((trace["regime"] == "nominal").mean())}


def run_smoke() -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    (model, plain), (twin, guarded) = build(SMOKE, device)
    data = list(batches(SMOKE, 4, 2, device))
    for x, y in data[:3]:
        one_step(model, plain, x, y, device)
        one_step(twin, guarded, x, y, device)
    x, y = data[3]
    if device == "cuda":
        extra = count_syncs(lambda: one_step(twin, guarded, x, y, device))
        return {"device": device, "syncs_in_guarded_step": extra}
    plain_reads = cpu_reads(lambda: one_step(model, plain, x, y, device))
    guarded_reads = cpu_reads(lambda: one_step(twin, guarded, x, y, device))
    return {"device": device, "local_scalar_dense_plain": plain_reads,
            "local_scalar_dense_guarded": guarded_reads, "rows": len(guarded.trace())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="timed steps per arm")
    ap.add_argument("--block", type=int, default=10, help="steps per timed block")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--smoke", action="store_true", help="a tiny model: check it runs")
    a = ap.parse_args()
    if a.smoke:
        out = run_smoke()
    elif not torch.cuda.is_available():
        sys.exit("gpu_step.py: no CUDA device (use --smoke to check the script on the CPU)")
    else:
        out = run_cuda(a.steps, a.block, a.batch)
        print(f"{out['device']}: GPT {out['params_M']}M params, bf16 autocast, fused AdamW, "
              f"{a.steps} steps per arm in blocks of {a.block}")
        print(f"  plain   {out['plain_ms']:8.3f} ms/step")
        print(f"  guarded {out['guarded_ms']:8.3f} ms/step   ratio {out['ratio']:.4f}   "
              f"syncs per guarded step {out['syncs_per_step']:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
