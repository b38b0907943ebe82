"""`python -m lbw_sim review NEW --against OLD --logs DIR`: a spec change reviewed over a
folder of logs, tested on two specs that differ in one threshold."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lbw_sim.cli import main
from lbw_sim.guard.engine import replay
from lbw_sim.guard.scoring import read_labels
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.studio.review import decisions_differ, log_files, review
from lbw_sim.traces import load_trace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHARED = ROOT.parent / "shared" / "traces"
OLD = GuardSpec.default()
#: one threshold apart: a lower spike threshold reacts to more of the examples' bumps
NEW = OLD.with_values({"thresholds.spike_z": 6.5}).renamed("lbw-adaptive-spike6.5")


@pytest.fixture
def logs(tmp_path):
    """The example logs with their label tables, and one file that is not a log."""
    for p in EXAMPLES.glob("*.csv"):
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "broken.csv").write_bytes(b"\x00\x01 not a log")
    return tmp_path


def test_review_finds_every_step_the_two_specs_decide_differently(logs):
    report = review(NEW, OLD, logs)
    assert [r.name for r in report.logs] == [p.name for p in log_files(logs)]
    assert list(report.diff()["setting"]) == ["thresholds.spike_z"]
    changed = 0
    for r in report.logs:
        if r.name == "broken.csv":
            assert r.error and r.steps == 0                     # said, not fatal
            continue
        trace = load_trace(logs / r.name)
        a, b = replay(trace, OLD), replay(trace, NEW)
        differ = (a["regime"].astype(str) != b["regime"].astype(str)).to_numpy() | \
            ~np.isclose(a["lr_scale"].to_numpy(float), b["lr_scale"].to_numpy(float)) | \
            (a["skipped"].to_numpy() != b["skipped"].to_numpy())
        assert r.differing == int(decisions_differ(a, b).sum()) >= int(differ.sum())
        assert r.spans["steps"].sum() == r.differing
        assert r.healthy_old == pytest.approx((a["regime"] == OLD.initial).mean())
        assert r.healthy_new == pytest.approx((b["regime"] == NEW.initial).mean())
        beside = logs / f"{Path(r.name).stem}_labels.csv"
        if beside.is_file() and len(read_labels(beside).start):
            assert r.detection is not None and len(r.detection) == 2
            assert set(r.detection["spec"]) == {f"old: {OLD.name}", f"new: {NEW.name}"}
        changed += r.differing > 0
    assert changed >= 1, "one threshold apart, yet no log decided differently"


def test_review_command_writes_markdown_and_html_with_both_hashes(logs, tmp_path, capsys):
    new, old = tmp_path / "new.yaml", tmp_path / "old.yaml"
    new.write_text(NEW.to_yaml())
    old.write_text(OLD.to_yaml())
    out = tmp_path / "out"
    assert main(["review", str(new), "--against", str(old), "--logs", str(logs),
                 "--out", str(out)]) == 0
    md, page = (out / "review.md").read_text(), (out / "review.html").read_text()
    for text in (md, page):
        assert NEW.hash in text and OLD.hash in text and "thresholds.spike_z" in text
    assert "| thresholds.spike_z | 10.0 | 6.5 |" in md
    assert "decided differently" in capsys.readouterr().out
    assert main(["review", str(new), "--against", str(old), "--logs",
                 str(tmp_path / "missing")]) == 2


@pytest.mark.skipif(not SHARED.is_dir(), reason="no shared real-world traces here")
def test_review_reads_real_logs():
    report = review(NEW, OLD, SHARED)
    read = [r for r in report.logs if not r.error]
    assert len(read) >= 3 and all(r.steps > 100 for r in read)


@pytest.mark.slow
def test_review_runs_the_fault_scenarios_under_each_spec(logs):
    report = review(NEW, OLD, logs, faults="quick")
    f = report.faults
    assert {"survived (old)", "survived (new)"} <= set(f.columns) and len(f) >= 3
    assert "Fault scenarios" in report.markdown()


def test_review_page_compares_the_designers_spec_with_the_default():
    from streamlit.testing.v1 import AppTest

    new = OLD.with_values({"thresholds.watch_z": 4.0}).renamed("lbw-adaptive-watch4")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["spec"] = new
    at = at.run().switch_page("pages/review.py").run()
    assert not at.exception and not at.error
    diff = next(d.value for d in at.dataframe if "setting" in d.value.columns)
    assert list(diff["setting"]) == ["thresholds.watch_z"]
    summary = next(d.value for d in at.dataframe if "healthy (new)" in d.value.columns)
    assert len(summary) == len(at.multiselect(key="review_logs").value) >= 3
    assert any(new.hash in c.value and OLD.hash in c.value for c in at.caption)
    assert summary["steps decided differently"].sum() > 0   # one threshold apart shows
