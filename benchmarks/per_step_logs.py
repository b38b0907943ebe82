"""The default spec on traces logged every step (lbw_sim/traces/per_step.py).

Per trace: % of steps nominal after warm-up (steps >= 200), transitions, the first causes,
and for the collapse and spike variants the regime at the incident's first step.

    python benchmarks/per_step_logs.py [SPEC.yaml] [--smoke]   (--smoke: seed 0 only)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lbw_sim.guard.engine import replay  # noqa: E402
from lbw_sim.guard.spec import GuardSpec  # noqa: E402
from lbw_sim.traces.per_step import (  # noqa: E402
    fine_tune,
    nominal_fraction,
    pre_train,
    with_collapse,
    with_spike,
)

WARMUP, AT = 200, 1500


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", nargs="?", help="a spec file (default: the shipped default)")
    p.add_argument("--smoke", action="store_true", help="seed 0 only (seconds)")
    args = p.parse_args(argv)
    smoke = args.smoke
    spec = GuardSpec.load(args.spec) if args.spec else GuardSpec.default()
    print(f"spec {spec.name} ({spec.hash}); nominal = % of steps >= {WARMUP} in "
          f"{spec.initial!r}")
    print("| trace | seed | nominal after warm-up | transitions | first causes | "
          f"regime at step {AT} (collapse / spike) |")
    print("|---|---|---|---|---|---|")
    for name, make, n in (("fine-tune 0.045 ± 0.017", fine_tune, 2000),
                          ("pre-training", pre_train, 3000)):
        for seed in (0,) if smoke else (0, 1, 2):
            df = make(n, seed=seed)
            out = replay(df, spec)
            fired = out[out["transition"] != ""]
            causes = "; ".join(sorted(set(fired["cause"].str.split(" ").str[0].head(20))))[:60]
            col = replay(with_collapse(df, AT)[0], spec).set_index("step").loc[AT, "regime"]
            spk = replay(with_spike(df, AT)[0], spec).set_index("step").loc[AT, "regime"]
            print(f"| {name} | {seed} | {100 * nominal_fraction(out, spec.initial, WARMUP):.1f} % "
                  f"| {len(fired)} | {causes or '-'} | {col} / {spk} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
