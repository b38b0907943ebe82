import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """../shared beside the checkout; tests that need it skip cleanly where it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present on this machine")
    return SHARED


@pytest.fixture
def readme_block():
    """`readme_block("Lightning")`: the first python block under the heading `### Lightning`
    in the README or the docs/ page it moved to, so a test runs the documented code as written."""
    def block(title: str) -> str:
        pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        text = next(t for t in (p.read_text(encoding="utf-8") for p in pages)
                    if f"\n### {title}\n" in t)
        section = text.split(f"\n### {title}\n", 1)[1]
        return section.split("```python\n", 1)[1].split("\n```", 1)[0]
    return block


@pytest.fixture
def guard_log_reads(monkeypatch):
    """Records what a trainer integration reads to log the guard: `replay` calls (none: the
    signals are the guard's own) and each `GuardedOptimizer.trace` call's (start, rows)."""
    from types import SimpleNamespace

    import lbw_sim.guard.engine as engine
    import lbw_sim.integrations.metrics as metrics
    from lbw_sim.guard.optim import GuardedOptimizer

    reads = SimpleNamespace(replays=0, traces=[])
    replay, trace = engine.replay, GuardedOptimizer.trace

    def counted_replay(*args, **kwargs):
        reads.replays += 1
        return replay(*args, **kwargs)

    def recorded_trace(self, signals=False, start=0):
        frame = trace(self, signals, start)
        reads.traces.append((start, len(frame)))
        return frame

    monkeypatch.setattr(engine, "replay", counted_replay)
    monkeypatch.setattr(metrics, "replay", counted_replay)
    monkeypatch.setattr(GuardedOptimizer, "trace", recorded_trace)
    return reads
