"""Guard designer: edit thresholds, regimes, transitions and bounds; preview; import/export.

The tables are built once from the spec editing started from (`designer_base`) and never
changed under the editors; each rerun rebuilds a spec from the edited copies. A valid one
becomes `st.session_state["spec"]` (used by Regimes and Replay); an invalid one is
reported next to its table and the last valid spec stays in use.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from lbw_sim.errors import SpecError
from lbw_sim.guard.analysis import transitions_table
from lbw_sim.guard.diagram import to_dot
from lbw_sim.guard.engine import replay
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.integrations.snippets import STACKS, usage
from lbw_sim.studio.editor import (
    edited_sections,
    error_section,
    spec_from_tables,
    spec_tables,
)
from lbw_sim.studio.tune import changed_name, described, file_name
from lbw_sim.studio.watch import moment
from lbw_sim.traces.synthetic import EXAMPLES
from lbw_sim.viz import trace_figure
from pages.common import (
    YOUR_LOG,
    designer_origin,
    glossary_link,
    load_example,
    regime_time_table,
    through_app,
    upload_widget,
    user_log,
)

through_app(__file__)

ss = st.session_state
NUMBER_HELP = "a number: 0.03, 3e-2, 1E-3 … (typed as text, so it is stored exactly)"
WHOLE_HELP = "a whole number of steps, 0 … 1000000000 (typed as text, so it is stored exactly)"
COLUMNS = {
    "thresholds": {"name": st.column_config.TextColumn("name", required=True),
                   "value": st.column_config.TextColumn("value", help=NUMBER_HELP)},
    "regimes": {"lr_scale": st.column_config.TextColumn("lr_scale", help="in [0, 1]; "
                                                        + NUMBER_HELP),
                "momentum_scale": st.column_config.TextColumn("momentum_scale",
                                                              help="in [0, 1]; " + NUMBER_HELP),
                "update_cap": st.column_config.TextColumn("update_cap", help="blank = no cap; "
                                                          + NUMBER_HELP),
                "skip_batches": st.column_config.TextColumn("skip_batches", help=WHOLE_HELP)},
    "transitions": {"from": st.column_config.TextColumn("from", help="regimes, comma-separated,"
                                                        " or *"),
                    "when": st.column_config.TextColumn("when", width="large"),
                    "for": st.column_config.TextColumn("for", help="at least 1; " + WHOLE_HELP),
                    "min_dwell": st.column_config.TextColumn("min_dwell", help=WHOLE_HELP),
                    "priority": st.column_config.TextColumn("priority", help="the highest wins; "
                                                            "-1000000 … 1000000")},
    "bounds": {"name": st.column_config.TextColumn("name", disabled=True),
               "value": st.column_config.TextColumn("value", help=NUMBER_HELP)},
}
HELP = {
    "thresholds": "Named constants the conditions use. Entry thresholds must stay above exit "
                  "thresholds (hysteresis).",
    "regimes": "Each regime's bounded control. lr_scale and momentum_scale are multipliers in "
               "[0, 1]; rollback restores the last good snapshot and skips `skip_batches`.",
    "transitions": "from → to when the condition has held `for` steps and the current regime "
                   "is at least `min_dwell` steps old; the highest priority wins.",
    "bounds": "Hard limits no regime can exceed.",
}


def import_spec(data: bytes | str, source: str) -> None:
    """Replace the design with an imported spec; a bad file leaves everything as it was."""
    try:
        spec = GuardSpec.from_text(data, source)
    except SpecError as exc:
        ss["import_error"] = f"{source}: {exc}"
        return
    ss.update(designer_base=spec, designer_origin=spec, spec=spec, import_error=None,
              designer_ver=ss.get("designer_ver", 0) + 1, import_ok=f"Imported {spec.name!r}.")


def import_ui() -> None:
    with st.expander("Import a spec (YAML/JSON)", expanded=bool(ss.get("import_error"))):
        left, right = st.columns(2)
        with left:
            up = st.file_uploader("Import a spec (YAML or JSON)", type=["yaml", "yml", "json"],
                                  key="spec_upload")
            if up is not None and up.file_id != ss.get("spec_upload_id"):
                ss["spec_upload_id"] = up.file_id
                import_spec(up.getvalue(), up.name)
            pasted = st.text_area("…or paste YAML", key="spec_paste", height=120)
            if st.button("Load pasted YAML", key="spec_paste_load"):
                import_spec(pasted, "pasted YAML")
        with right:
            if st.button("Reset to the default spec", key="spec_reset"):
                import_spec(GuardSpec.default().to_yaml(), "default spec")
        if ss.get("import_error"):
            st.error(f"Import failed, nothing changed — {ss['import_error']}")
        elif ss.get("import_ok"):
            st.success(ss["import_ok"])


def edit_tables(base: GuardSpec) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """One editor per section; returns the edited tables and a slot under each for messages."""
    ver = ss.setdefault("designer_ver", 0)
    if ss.get("designer_tables_ver") != ver:
        ss["designer_tables"], ss["designer_tables_ver"] = spec_tables(base), ver
    edited, slots = {}, {}
    for tab, (section, frame) in zip(st.tabs([s.title() for s in ss["designer_tables"]]),
                                     ss["designer_tables"].items()):
        with tab:
            st.caption(HELP[section])
            edited[section] = st.data_editor(
                frame, key=f"ed_{section}_{ver}", hide_index=True, width="stretch",
                num_rows="fixed" if section == "bounds" else "dynamic",
                column_config=COLUMNS[section])
            slots[section] = st.empty()
    return edited, slots


def rebuild(base: GuardSpec, edited: dict[str, pd.DataFrame], slots: dict) -> GuardSpec:
    """A spec from the tables, or the last valid one with the error shown on the tab whose
    edit caused it (compared with the tables of the last valid spec)."""
    ver = ss.get("designer_ver", 0)
    if ss.get("designer_valid_tables_ver") != ver:
        ss["designer_valid_tables"], ss["designer_valid_tables_ver"] = spec_tables(base), ver
    try:
        spec = spec_from_tables(base, edited)
    except SpecError as exc:
        where = error_section(exc.field, edited_sections(ss["designer_valid_tables"], edited))
        slot = slots.get(where)
        checked = f" (checked in `{exc.field}`)" if exc.field else ""
        problem = exc.problem.rstrip(".")
        (slot or st).error(f"{problem[:1].upper()}{problem[1:]}{checked}.")
        tab = f" on the **{where.title()}** tab" if slot else ""
        st.error(f"The last edit{tab} is not valid; the last valid spec stays in use until "
                 "it is fixed.")
        return ss.get("spec") or base
    ss["designer_valid_tables"] = {k: v.copy() for k, v in edited.items()}
    wanted = (ss.get("designer_name") or "").strip()
    if wanted or spec.hash != base.hash:  # an edit gets its own name: no two `lbw-default`s
        spec = spec.renamed(wanted or changed_name(designer_origin(), spec))
    ss["spec"] = spec
    for warning in spec.warnings():
        st.warning(warning)
    return spec


def preview_choice():
    """The preview's trace: your log (once uploaded on any page) or an example."""
    with st.expander("Preview on your own log", expanded=user_log() is None):
        upload_widget("designer_upload")
    loaded = user_log()
    if loaded is not None and ss.get("preview_log_id") != loaded.file_id:
        ss["preview_example"] = YOUR_LOG  # a newly loaded log: show it
        ss["preview_log_id"] = loaded.file_id
    labels = ([YOUR_LOG] if loaded else []) + list(EXAMPLES)
    if ss.get("preview_example") not in labels:
        ss.pop("preview_example", None)
    label = st.selectbox("Trace", labels, key="preview_example", format_func=lambda o:
                         f"Your log: {loaded.name}" if o == YOUR_LOG and loaded else o)
    ss["preview_choice"] = label       # survives page switches (widget state may not)
    return label, (loaded.trace if label == YOUR_LOG else load_example(label))


def preview(spec: GuardSpec, origin: GuardSpec) -> None:
    st.subheader("Preview on a trace")
    label, trace = preview_choice()
    out = replay(trace, spec, signals=True)
    steps = out["step"]
    fired = out.loc[out["transition"].astype(str) != "", "step"]
    default = int(fired.iloc[0]) if len(fired) else int(steps.iloc[-1])
    step = st.slider("Step to show on the diagram (its regime is outlined)", int(steps.iloc[0]),
                     int(steps.iloc[-1]), default, key="preview_step")
    now = moment(out, step)
    active = now.regime
    left, right = st.columns([3, 1])
    with left:
        fig = trace_figure(out, spec, height=470)
        fig.add_vline(x=step, line_color="#000", line_width=1)
        st.plotly_chart(fig, width="stretch", key="designer_preview_chart")
        st.caption("The spec being edited, replayed over the trace. Bands are the regimes "
                   "it enters; the bottom panel is the LR scale it applies (× = skipped). Any "
                   "valid edit re-runs this at once.")
    with right:
        st.markdown("**Time in each regime**")
        regime_time_table(out)
    st.graphviz_chart(to_dot(spec, active=active, taken=now.taken), width="stretch")
    st.markdown(now.sentence())
    st.caption(f"State diagram of this spec; at step {step} (the black line above) the guard "
               f"is in **{active}** (thick outline), and the thick edge is the transition it "
               "last took. Double outline = initial regime.")
    st.markdown("**Transitions in the preview**")
    st.dataframe(transitions_table(out), hide_index=True, width="stretch", key="preview_fired")
    st.markdown(f"**Changes against `{origin.name}`** (hash `{origin.hash}`, the spec this "
                "design started from)")
    changes = [c for c in origin.diff(spec) if c[0] not in ("name", "description")]
    if changes:
        st.dataframe(pd.DataFrame([(p, str(a), str(b)) for p, a, b in changes],
                                  columns=["setting", "was", "now"]),
                     hide_index=True, width="stretch", key="designer_diff")
    else:
        st.caption("No changes yet.")


st.title("Guard designer")
st.markdown("Edit the guard's thresholds, regimes, transitions and bounds. The preview, the "
            "state diagram and the **Regimes** and **Replay** pages use the last valid spec. "
            + glossary_link())
base = ss.setdefault("designer_base", GuardSpec.default())
import_ui()
edited, slots = edit_tables(ss["designer_base"])
spec = rebuild(ss["designer_base"], edited, slots)
info, name_col, export = st.columns([3, 2, 1])
info.caption(f"Spec in use: `{spec.name}` · hash `{spec.hash}`")
name_col.text_input("Name of the edited spec", key="designer_name",
                    placeholder=changed_name(designer_origin(), spec))
exported = described(spec, designer_origin())
export.download_button("Export YAML", data=exported.to_yaml(), file_name=file_name(spec),
                       mime="application/x-yaml", key="spec_export",
                       help=f"{file_name(spec)}: its description starts with what changed "
                            f"against {designer_origin().name}.")
with st.expander("Use the exported spec in your training loop"):
    for tab, code in zip(st.tabs(list(STACKS)), usage(file_name(spec)).values()):
        tab.code(code, language="python")
preview(spec, designer_origin())
