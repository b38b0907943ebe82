"""Review: a spec change checked before it is used — the designer's spec (or an uploaded
one) against the spec in use, over your log and the built-in examples
(`lbw_sim.studio.review`, the same report as `python -m lbw_sim review`)."""

from __future__ import annotations

import streamlit as st

from lbw_sim.errors import SpecError
from lbw_sim.guard.scoring import read_labels
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.studio.review import Review, review_trace
from lbw_sim.studio.tune import file_name
from lbw_sim.traces.synthetic import EXAMPLES, example
from lbw_sim.traces.synthetic import labels as example_labels
from pages.common import designer_spec, glossary_link, load_example, through_app, user_log

through_app(__file__)

st.title("Review a spec change")
st.markdown("Before a changed guard runs on a real training job: where do the new and the "
            "old spec decide differently, what does each cost a healthy run, and how does "
            "each catch the labelled incidents? The same report comes from "
            "`python -m lbw_sim review NEW.yaml --against OLD.yaml --logs DIR`. "
            + glossary_link())

CHOICES = ("The designer's spec", "The shipped default", "The retired v1 spec (lbw-v1)",
           "Upload a spec file")


def pick(label: str, key: str, index: int) -> GuardSpec | None:
    choice = st.selectbox(label, CHOICES, index=index, key=key)
    if choice == CHOICES[0]:
        return designer_spec()
    if choice == CHOICES[1]:
        return GuardSpec.default()
    if choice == CHOICES[2]:
        return GuardSpec.named("lbw-v1")
    up = st.file_uploader(f"{label}: a spec file (YAML or JSON)", type=["yaml", "yml", "json"],
                          key=f"{key}_file")
    if up is None:
        return None
    try:
        return GuardSpec.from_text(up.getvalue(), up.name)
    except SpecError as exc:
        st.error(f"{up.name}: {exc}")
        return None


left, right = st.columns(2)
with left:
    new = pick("New spec", "review_new", 0)
with right:
    old = pick("Against (the spec in use)", "review_old", 1)
if new is None or old is None:
    st.info("Upload the spec file to review.")
    st.stop()
st.caption(f"New: `{new.name}` · hash `{new.hash}` — against: `{old.name}` · hash "
           f"`{old.hash}`.")
loaded = user_log()
options = ([f"Your log: {loaded.name}"] if loaded else []) + list(EXAMPLES)
chosen = st.multiselect("Logs to review on", options, default=options, key="review_logs",
                        help="Upload a log on any page (Replay, Tune …) to add it here.")
if not chosen:
    st.info("Pick at least one log.")
    st.stop()
logs = []
for name in chosen:
    if loaded and name == options[0]:
        logs.append(review_trace(loaded.name, loaded.trace, new, old))
    else:
        labels = read_labels(example_labels(example(name)[1]))
        logs.append(review_trace(name, load_example(name), new, old, labels))
report = Review(new, old, logs)
diff = report.diff()
if diff.empty:
    st.warning("The two specs decide alike: no setting differs (only names or descriptions). "
               "Edit the designer's spec, or pick another pair.")
else:
    st.markdown("**What changed**")
    st.dataframe(diff, hide_index=True, width="stretch", key="review_diff")
st.markdown("**Per log** (healthy: the share of steps in the starting regime, "
            f"`{old.initial}`)")
summary = report.summary()
st.dataframe(summary, hide_index=True, width="stretch", key="review_summary", column_config={
    "log": st.column_config.TextColumn("log", width="large"),
    "healthy (old)": st.column_config.NumberColumn("healthy (old)", format="percent"),
    "healthy (new)": st.column_config.NumberColumn("healthy (new)", format="percent")})
for log in logs:
    if log.error:
        continue
    with st.expander(f"{log.name}: {log.differing:,} of {log.steps:,} steps decided "
                     "differently", expanded=bool(log.differing) and len(logs) <= 2):
        if len(log.spans):
            st.dataframe(log.spans, hide_index=True, width="stretch",
                         column_config={"old": st.column_config.TextColumn(width="large"),
                                        "new": st.column_config.TextColumn(width="large")})
        else:
            st.caption("The two specs take the same decision at every step of this log.")
        if log.detection is not None:
            st.markdown("Detection on the labelled incidents")
            st.dataframe(log.detection, hide_index=True, width="stretch")
a, b = st.columns(2)
stem = file_name(new).removesuffix(".yaml")
a.download_button("Download the report (Markdown)", report.markdown(),
                  file_name=f"review_{stem}.md", mime="text/markdown", key="review_md",
                  on_click="ignore", icon=":material/download:")
b.download_button("Download the report (HTML)", report.html(),
                  file_name=f"review_{stem}.html", mime="text/html", key="review_html",
                  on_click="ignore", icon=":material/download:")
st.caption("Fault scenarios train small models, so they run from the command line: "
           "`python -m lbw_sim review NEW.yaml --against OLD.yaml --logs DIR --faults quick`.")
