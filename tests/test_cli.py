import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lbw_sim.guard.spec import GuardSpec
from lbw_sim.traces import write_table
from lbw_sim.traces.synthetic import demo_trace

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lbw_sim", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def demo_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "demo.csv"
    write_table(demo_trace()[0], path)
    return path


def test_spec_default_prints_loadable_yaml(tmp_path):
    r = cli("spec", "--default")
    assert r.returncode == 0
    assert GuardSpec.from_dict(yaml.safe_load(r.stdout)) == GuardSpec.default()
    (tmp_path / "s.yaml").write_text(r.stdout)
    v = cli("validate", tmp_path / "s.yaml")
    assert v.returncode == 0 and GuardSpec.default().hash in v.stdout


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_replay_writes_annotated_trace(demo_csv, tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    r = cli("replay", demo_csv, "--out", out)
    assert r.returncode == 0, r.stderr
    left = set(GuardSpec.default().regimes) - {"nominal"}       # the demo leaves nominal
    assert "transitions:" in r.stdout and any(name in r.stdout for name in left)
    df = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True),
          ".parquet": pd.read_parquet}[suffix](out)
    assert {"regime", "lr_scale", "skipped", "cause"} <= set(df.columns)
    assert len(df) == 3000 and df["skipped"].sum() > 0


def test_replay_with_spec_file(demo_csv, tmp_path):
    spec = GuardSpec.default().with_values({"thresholds.grad_spike_z": 1e9,
                                            "thresholds.spike_z": 500.0})
    (tmp_path / "lax.json").write_text(spec.to_json())
    r = cli("replay", demo_csv, "--spec", tmp_path / "lax.json")
    assert r.returncode == 0 and "spike ->" not in r.stdout


@pytest.mark.parametrize("make", [
    lambda p: p / "missing.csv",
    lambda p: (p / "x.csv").write_text("a,b\n1,2\n") and p / "x.csv",
    lambda p: (p / "bin.parquet").write_bytes(os.urandom(512)) and p / "bin.parquet",
    lambda p: (p / "steps.csv").write_text("step,loss\nfoo,1\n") and p / "steps.csv",
    lambda p: (p / "t.txt").write_text("hello") and p / "t.txt",
    lambda p: (p / "e.csv").write_text("") and p / "e.csv",
])
def test_bad_trace_exits_2_with_one_line(tmp_path, make):
    r = cli("replay", make(tmp_path))
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("text", ["initial: [", "name: x\n", "- 1\n- 2\n",
                                  "!!python/object/apply:os.system ['touch PWNED']"])
def test_bad_spec_exits_2_with_one_line(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    r = cli("validate", p, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "PWNED").exists()


def test_replay_does_not_import_torch_or_streamlit(demo_csv):
    code = ("import sys, lbw_sim, lbw_sim.cli as c; "
            f"c.main(['replay', {str(demo_csv)!r}]); "
            "bad = [m for m in ('torch', 'streamlit') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
