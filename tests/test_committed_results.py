"""Committed results cannot rot: every committed table.md re-renders byte-identical from the
committed summaries (and, where committed, traces) with today's report code. A change to a
report's format or to a definition it uses must re-render the committed tables with it.

The one exception is named: the Tiny Shakespeare grid's quiet row is read from guard traces
that are not committed (its table keeps the row its run wrote).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lbw_sim.bench.claim import claim_frame, claim_markdown
from lbw_sim.bench.fault_grid import TASKS as FAULT_TASKS
from lbw_sim.bench.fault_grid import read_fault_summary
from lbw_sim.bench.fault_report import table_markdown as fault_markdown
from lbw_sim.bench.stress_report import load_results, report_table, table_markdown
from lbw_sim.bench.suite import get_tasks
from lbw_sim.bench.suite_report import load_suite, suite_markdown, suite_spec

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
STRESS = sorted(p.parent for p in RESULTS.glob("*/*/summary.csv") if p.parent.parent.name
                .startswith(("suite", "finetune"))) + [RESULTS / "lr_stress_tinyshakespeare"]
SUITES = sorted(p.parent for p in RESULTS.glob("*/suite.json"))
FAULTS = sorted(p.parent for p in RESULTS.glob("faults*/summary.csv"))
NO_TRACES = {"lr_stress_tinyshakespeare": "| quiet: nominal after warm-up"}


def committed(folder: Path) -> tuple[str, str]:
    text = (folder / "table.md").read_text(encoding="utf-8")
    return text, text.splitlines()[0].removeprefix("# ")


def without(text: str, prefix: str | None) -> list[str]:
    return [ln for ln in text.splitlines() if prefix is None or not ln.startswith(prefix)]


@pytest.mark.parametrize("folder", STRESS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_stress_tables_re_render(folder):
    text, title = committed(folder)
    res = load_results(folder)
    fresh = table_markdown(report_table(res.summary), res.reference, title, res.nominal)
    skip = NO_TRACES.get(folder.name)
    assert without(fresh, skip) == without(text, skip)


@pytest.mark.parametrize("folder", SUITES, ids=lambda p: p.name)
def test_suite_tables_re_render(folder):
    text, title = committed(folder)
    tasks = json.loads((folder / "suite.json").read_text())["tasks"]
    names, finetune = [t["name"] for t in tasks], any(t.get("finetune") for t in tasks)
    fresh = suite_markdown(load_suite(folder), get_tasks(names, finetune=finetune), title,
                           spec=suite_spec(folder))
    assert fresh == text


def test_the_claim_re_renders():
    assert claim_markdown(claim_frame(RESULTS)) == (RESULTS / "claim.md").read_text("utf-8")


@pytest.mark.parametrize("folder", FAULTS, ids=lambda p: p.name)
def test_fault_tables_re_render(folder):
    text, title = committed(folder)
    lrs = {t: v["lr"] for t, v in FAULT_TASKS.items()}
    assert fault_markdown(read_fault_summary(folder / "summary.csv"), title, lrs=lrs) == text


def test_every_committed_table_is_covered():
    covered = {p / "table.md" for p in [*STRESS, *SUITES, *FAULTS]}
    tables = set(RESULTS.glob("*/table.md")) | set(RESULTS.glob("*/*/table.md"))
    assert tables == covered
