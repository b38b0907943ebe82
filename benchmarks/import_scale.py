"""Import a 10M-row canonical trace as CSV and as JSONL; print rows/s and peak RSS.

Generation and each import run in child processes (Linux keeps ru_maxrss across exec,
so the parent stays stdlib-only and small) and `ru_maxrss` is the import's own peak. Ends with one
JSON line: {"csv_rows_per_s", "jsonl_rows_per_s", "csv_peak_mb", "jsonl_peak_mb"}.
Usage: python benchmarks/import_scale.py [--rows N] [--smoke]   (--smoke: 2,000 rows)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
from lbw_sim.traces import load_trace
t = time.perf_counter()
df = load_trace(sys.argv[1])
dt = time.perf_counter() - t
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": len(df), "seconds": dt, "peak_mb": peak_mb,
                  "columns": list(df.columns)}))
"""


def write_files(d: Path, rows: int, chunk: int = 1_000_000) -> dict[str, Path]:
    """Canonical columns, written chunk by chunk so the generator stays small too."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    csv_path, jsonl_path = d / "trace.csv", d / "trace.jsonl"
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        step = np.arange(start, start + n)
        part = pd.DataFrame({"step": step, "loss": 3.0 / np.log(step + 3) + rng.normal(0, .01, n),
                             "grad_norm": rng.lognormal(0, 0.3, n), "lr": np.full(n, 3e-4),
                             "val_loss": np.where(step % 1000 == 0, 2.5, np.nan)})
        part.to_csv(csv_path, mode="a", header=start == 0, index=False, float_format="%.6g")
        with open(jsonl_path, "a") as f:
            f.write(part.to_json(orient="records", lines=True, double_precision=6))
    return {"csv": csv_path, "jsonl": jsonl_path}


def measure(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(REPO)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--smoke", action="store_true", help="2,000 rows (seconds)")
    ap.add_argument("--generate-into", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rows = 2_000 if args.smoke else args.rows
    if args.generate_into:
        write_files(Path(args.generate_into), rows)
        return
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--rows", str(rows), "--generate-into", tmp],
                       check=True)
        files = {"csv": Path(tmp) / "trace.csv", "jsonl": Path(tmp) / "trace.jsonl"}
        print(f"generated {rows:,} rows in {time.perf_counter() - t:.1f}s: " + ", ".join(
            f"{k} {p.stat().st_size / 2**20:.0f} MiB" for k, p in files.items()))
        for fmt, path in files.items():
            r = measure(path)
            assert r["rows"] == rows, r
            rate = rows / r["seconds"]
            print(f"{fmt:5s}: {r['seconds']:.2f}s  {rate / 1e6:.2f}M rows/s  "
                  f"peak RSS {r['peak_mb']:.0f} MB  columns {r['columns']}")
            summary[f"{fmt}_rows_per_s"] = round(rate)
            summary[f"{fmt}_peak_mb"] = round(r["peak_mb"], 1)
    print(json.dumps({k: summary[k] for k in ("csv_rows_per_s", "jsonl_rows_per_s",
                                              "csv_peak_mb", "jsonl_peak_mb")}))


if __name__ == "__main__":
    main()
