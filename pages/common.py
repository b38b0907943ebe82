"""Widgets and session state shared by the studio pages (not a page: app.py does not route here).

Per-browser-session state lives in `st.session_state`: the designer's spec (`spec`), the
spec it started from (`designer_base`) and the designer's preview example. Nothing of a
user's is cached in `st.cache_resource`; `st.cache_data` holds only pure results of the
project's own examples.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lbw_sim.errors import TraceError
from lbw_sim.guard.analysis import time_in_regime
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.studio.uploads import MAX_UPLOAD_BYTES, UploadResult, read_upload
from lbw_sim.traces.synthetic import EXAMPLES, example

MAP_TARGETS = ("step", "loss", "grad_norm", "lr", "val_loss")
ROUTED, WANTED = "_lbw_routed", "_lbw_wanted_page"


def through_app(page_file: str) -> None:
    """Hand a page opened the legacy way over to app.py, which then opens it.

    Until app.py has run once in the server process, Streamlit serves a page URL straight
    from `pages/` (raw file names in the sidebar, no st.navigation menu). app.py marks every
    session it routes; an unmarked session is sent to app.py with the page it asked for.
    """
    if not st.session_state.get(ROUTED):
        st.session_state[WANTED] = Path(page_file).stem
        st.switch_page("app.py")


@st.cache_data(show_spinner=False, max_entries=8)
def load_example(label: str):
    """A built-in example trace (pure, so shared caching is safe)."""
    return example(label)[0]


def designer_spec() -> GuardSpec:
    """The designer's last valid spec for this browser session (the default until edited)."""
    return st.session_state.get("spec") or GuardSpec.default()


def spec_choice(label: str, key: str, default: int = 0) -> GuardSpec:
    """Pick the shipped default or this session's designer spec."""
    options = ["Default spec", "Designer's spec"]
    choice = st.selectbox(label, options, index=default, key=key)
    return GuardSpec.default() if choice == options[0] else designer_spec()


def regime_time_table(out, key: str | None = None) -> None:
    """The table of time in each regime of an annotated trace, shares as bars."""
    st.dataframe(time_in_regime(out), hide_index=True, width="stretch", key=key,
                 column_config={"share": st.column_config.ProgressColumn(
                     "share", min_value=0.0, max_value=1.0, format="percent")})


def upload_widget(key: str) -> UploadResult | None:
    """File upload → canonical trace, with a column mapping when detection is unsure.

    No extension filter: TensorBoard event files end in a host name; content decides.

    Errors are shown as one line with `st.error`; the page carries on without a trace.
    """
    up = st.file_uploader(f"Upload a training log (≤ {MAX_UPLOAD_BYTES // 1024**2} MB: CSV, "
                          "JSONL, Parquet, trainer_state.json, nanoGPT text …)",
                          key=key)
    if up is None:
        return None
    mapping = st.session_state.get(f"{key}_mapping", {}).get(up.file_id, {})
    try:
        result = read_upload(up.name, up.getvalue(), mapping)
    except TraceError as exc:
        st.error(f"Could not read the upload: {exc}")
        return None
    if result.needs_mapping:
        _mapping_form(key, up.file_id, result)
    if result.trace is None:
        return None
    fmt = result.format or "?"
    st.caption(f"Read **{result.name}** as `{fmt}`: {len(result.trace):,} rows, columns "
               f"{', '.join(map(str, result.trace.columns[:8]))}.")
    return result


def _mapping_form(key: str, file_id: str, result: UploadResult) -> None:
    st.warning(f"{result.note or 'Which column is which?'} — pick the columns below.")
    guess = {t: next((c for c in result.columns if t in c.lower()), "") for t in MAP_TARGETS}
    with st.form(f"{key}_map_form"):
        cols = st.columns(len(MAP_TARGETS))
        chosen = {}
        for col, target in zip(cols, MAP_TARGETS):
            options = ["", *result.columns]
            chosen[target] = col.selectbox(target, options, key=f"{key}_map_{target}",
                                           index=options.index(guess[target]))
        if st.form_submit_button("Apply column mapping"):
            maps = st.session_state.setdefault(f"{key}_mapping", {})
            maps[file_id] = {k: v for k, v in chosen.items() if v}
            st.rerun()


def trace_source(key: str, allow_preview: bool = False):
    """Radio: a built-in example, an upload, or the designer's preview trace → (label, trace)."""
    options = ["Built-in example", "Upload a log"]
    if allow_preview:
        options.append("Designer's preview")
    source = st.radio("Trace", options, horizontal=True, key=f"{key}_source")
    if source == "Built-in example":
        label = st.selectbox("Example", list(EXAMPLES), key=f"{key}_example")
        return label, load_example(label)
    if source == "Upload a log":
        result = upload_widget(f"{key}_upload")
        return (result.name, result.trace) if result else (None, None)
    label = st.session_state.get("preview_example", next(iter(EXAMPLES)))
    st.caption(f"The designer's preview trace: *{label}*.")
    return label, load_example(label)
