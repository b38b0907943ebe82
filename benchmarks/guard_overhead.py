"""What a guard costs per training step, next to plain AdamW, clip-norm, ZClip and skip-step.

The tiny GPT of the stress suite (4 layers, 4 heads, width 64, context 64, batch 32) on the
CPU with one thread. Each arm trains its own copy of the same initial model on the same
batches; the arms run interleaved step by step (in a rotating order) so that machine noise
hits them alike. Two measurements:

1. whole step (forward + backward + optimizer call): per step, each arm's time divided by
   plain AdamW's time of the same step; the median of these paired ratios;
2. the optimizer call alone (where all the arms differ) and the added work isolated
   (the guard's telemetry and decision, clip_grad_norm_, ZClip, the skip-step factor),
   as a fraction of a median plain-AdamW step: an estimate free of forward/backward noise.

Prints a table and ends with one JSON line.

    python benchmarks/guard_overhead.py [--steps 60] [--repeats 3]
    python benchmarks/guard_overhead.py --smoke      # seconds: CI runs it so it cannot rot
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lbw_sim.guard.spec import GuardSpec  # noqa: E402
from lbw_sim.sim.arms import make_arm  # noqa: E402
from lbw_sim.sim.baselines import ARMS as BASE_ARMS  # noqa: E402
from lbw_sim.sim.baselines import SkipStepAdamW  # noqa: E402
from lbw_sim.sim.data import Batches, SyntheticSource  # noqa: E402
from lbw_sim.sim.models import GPT, GPTConfig  # noqa: E402

WARMUP = 10
#: every arm, plus the guard under the v1 spec beside the default (the adaptive spec), so
#: the default's overhead is read against its predecessor's in the same run
ARMS = (*BASE_ARMS, "guard_v1")


def setup(seed: int = 0):
    source = SyntheticSource(vocab_size=65, order=2, seed=0)
    data = source.dataset(200_000, 1_000)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=64))
    batches = Batches(data.train, 64, 32, seed=seed)
    models = {name: copy.deepcopy(model) for name in ARMS}
    arms = {name: make_arm(name, models[name], lr=1e-3, telemetry=name != "adamw")
            for name in BASE_ARMS}
    arms["guard_v1"] = make_arm("guard", models["guard_v1"], lr=1e-3,
                                spec=GuardSpec.named("lbw-v1"))
    return batches, models, arms


def one_step(model, arm, x, y, plain: bool) -> tuple[float, float]:
    """(whole step, optimizer call) in seconds."""
    t0 = time.perf_counter()
    _, loss = model(x, y)
    arm.zero_grad(set_to_none=True)
    loss.backward()
    t1 = time.perf_counter()
    arm.optimizer.step() if plain else arm.step(loss=loss.detach())
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


def measure(steps: int, repeats: int) -> dict[str, dict[str, list[float]]]:
    batches, models, arms = setup()
    times = {n: {"step": [], "call": []} for n in ARMS}
    order = list(ARMS)
    total = 0
    for _ in range(repeats):
        for s in range(WARMUP + steps):
            x, y = batches.get(total)
            total += 1
            order = order[1:] + order[:1]  # rotate: no arm always runs first
            for name in order:
                step, call = one_step(models[name], arms[name], x, y, plain=name == "adamw")
                if s >= WARMUP:
                    times[name]["step"].append(step)
                    times[name]["call"].append(call)
    return times


CALLS = 200      # timed calls per added-work figure (--smoke: a few)
PREPARE = 120    # guard steps before the added work is timed (past warm-up and a snapshot)


def median_us(fn, n: int | None = None) -> float:
    n = n or CALLS
    for _ in range(10):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def added_work() -> dict[str, float]:
    """Median microseconds of the work each arm adds to AdamW, alone, on real gradients."""
    batches, models, arms = setup(seed=1)
    name = "guard"
    model, guard = models[name], arms[name]
    for s in range(PREPARE):  # past the guard's warm-up, snapshot taken
        x, y = batches.get(s)
        _, loss = model(x, y)
        guard.zero_grad()
        loss.backward()
        guard.step(loss=loss.detach())
    params = list(model.parameters())
    loss_t = loss.detach()
    clip_model = copy.deepcopy(model)
    for p, q in zip(clip_model.parameters(), params):
        p.grad = q.grad.clone()
    clip_params = list(clip_model.parameters())
    zc = make_arm("zclip", clip_model, lr=1e-3)
    skip = SkipStepAdamW([torch.nn.Parameter(torch.zeros(1))])
    step = [guard.step_count]
    inner = guard.optimizer

    def guard_decide():
        g_norm_loss = guard.telemetry(loss_t)
        guard.guard.observe(step[0], loss=g_norm_loss[0], grad_norm=g_norm_loss[1], lr=1e-3)
        step[0] += 1

    def skip_factor():
        skip.latest_loss, skip.latest_grad_norm = loss_t, zc.grad_norm()
        skip.get_step_factor()

    overhead = guard_step_overhead(guard, loss_t)  # before guard_decide moves the engine on
    norm = guard.grad_norm()
    reused = guard_step_overhead(guard, loss_t, grad_norm=norm)
    step[0] = guard.step_count
    return {
        "guard.step() minus its AdamW step (median)": statistics.median(overhead),
        "  same, mean incl. snapshots every 100 steps": statistics.mean(overhead),
        "  same, reusing a clip's norm (grad_norm=)": statistics.median(reused),
        "guard telemetry (grad norm + loss to host)": median_us(lambda: guard.telemetry(loss_t)),
        "guard telemetry + decision (engine observe)": median_us(guard_decide),
        "clip_grad_norm_ (norm + scale, foreach)": median_us(
            lambda: torch.nn.utils.clip_grad_norm_(clip_params, 1e9, foreach=True)),
        "zclip.step(model)": median_us(lambda: zc.zclip.step(clip_model)),
        "skip-step grad norm + step factor": median_us(skip_factor),
        "AdamW optimizer.step() alone": median_us(inner.step),
    }


def guard_step_overhead(guard, loss, n: int | None = None, grad_norm=None) -> list[float]:
    """(guarded step - bare inner step) in us, alternating on the same gradients.

    Covers everything GuardedOptimizer adds: telemetry, decision, LR scaling, records and
    the amortised snapshot (every `snapshot_every` steps while nominal).
    """
    diffs = []
    for _ in range(n or CALLS + 100):
        t0 = time.perf_counter()
        guard.step(loss=loss, grad_norm=grad_norm)
        t1 = time.perf_counter()
        guard.optimizer.step()
        t2 = time.perf_counter()
        diffs.append(((t1 - t0) - (t2 - t1)) * 1e6)
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="a few steps: check it runs")
    args = ap.parse_args()
    if args.smoke:
        global CALLS, PREPARE
        CALLS, PREPARE = 3, 5
        args.steps, args.repeats = 2, 1
    torch.set_num_threads(1)
    times = measure(args.steps, args.repeats)
    base_step = statistics.median(times["adamw"]["step"])
    base_call = statistics.median(times["adamw"]["call"])
    print(f"tiny GPT (4x4x64, ctx 64, batch 32), CPU, 1 thread, {args.repeats} x "
          f"{args.steps} interleaved steps per arm\n")
    print(f"{'arm':10} {'step ms':>8} {'paired ratio':>13} {'opt call ms':>12} "
          f"{'call - AdamW':>13} {'as % of step':>13}")
    ratios, added = {}, {}
    for name in ARMS:
        t = times[name]
        paired = [a / b for a, b in zip(t["step"], times["adamw"]["step"])]
        ratios[name] = statistics.median(paired)
        call = statistics.median(t["call"])
        added[name] = (call - base_call) / base_step
        print(f"{name:10} {statistics.median(t['step']) * 1e3:8.2f} {ratios[name]:13.4f} "
              f"{call * 1e3:12.3f} {(call - base_call) * 1e3:12.3f}m {added[name]:12.2%}")
    print(f"\nadded work alone (median of {CALLS} calls on the model's real gradients):")
    for what, us in added_work().items():
        print(f"  {what:45} {us:9.1f} us  ({us / 1e6 / base_step:6.2%} of a step)")
    print(f"\nplain AdamW step: {base_step * 1e3:.2f} ms (median)")
    out = {f"{n}_vs_adamw": round(ratios[n], 4) for n in ARMS if n != "adamw"}
    out.update({f"{n}_added_vs_adamw": round(1 + added[n], 4) for n in ARMS if n != "adamw"})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
