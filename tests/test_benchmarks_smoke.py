"""Benchmarks cannot rot: every script in benchmarks/ runs in its `--smoke` mode and exits 0.

The scripts are found by glob, so a new one is covered without being listed here. They run
as subprocesses (from a temporary working folder), two at a time, once for the module; no
timing is asserted. A smoke run must leave the repository as it found it (committed results
are never overwritten).
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".ruff_cache"}
TIMEOUT_S = 120


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under `root` outside caches and .git."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(root).parts):
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def run_smoke(script: Path, cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, str(script), "--smoke"], cwd=cwd,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, -1, "", f"timed out after {TIMEOUT_S} s")


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory) -> tuple[dict[str, subprocess.CompletedProcess], list[str]]:
    before = snapshot(REPO)
    dirs = {s.name: tmp_path_factory.mktemp(s.stem) for s in SCRIPTS}
    with ThreadPoolExecutor(2) as pool:
        runs = dict(zip(dirs, pool.map(lambda s: run_smoke(s, dirs[s.name]), SCRIPTS)))
    after = snapshot(REPO)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return runs, changed


def test_scripts_are_found():
    assert len(SCRIPTS) >= 8, [s.name for s in SCRIPTS]


@pytest.mark.parametrize("name", [s.name for s in SCRIPTS])
def test_smoke_exits_zero(smoke_runs, name):
    r = smoke_runs[0][name]
    assert r.returncode == 0, f"{name} --smoke exited {r.returncode}:\n{r.stderr[-3000:]}"
    assert r.stdout.strip(), f"{name} --smoke printed nothing"


def test_smoke_leaves_the_repository_alone(smoke_runs):
    assert smoke_runs[1] == [], f"smoke runs changed files in the repository: {smoke_runs[1]}"
