"""Live training: a guarded and a plain run side by side, charts redrawn every second.

The run is a `LiveSession` (lbw_sim/sim/live.py) kept in this browser session's
`st.session_state`: its worker thread makes no Streamlit calls; the fragment below reads
`snapshot()` once a second. Start stops the session's previous run first; a run no page has
polled for IDLE_TIMEOUT seconds (a closed tab) stops itself.
"""

from __future__ import annotations

import streamlit as st

from lbw_sim.errors import SpecError
from lbw_sim.guard.analysis import transitions_table
from lbw_sim.guard.diagram import to_dot
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.sim.device import DEVICE_CHOICES, pick_device
from lbw_sim.sim.live import LiveSession, Snapshot, device_label
from lbw_sim.sim.scenarios import list_scenarios, load_scenario
from lbw_sim.studio.tune import changed_name
from lbw_sim.studio.watch import fault_notes, moment
from lbw_sim.viz import live_charts
from pages.common import glossary_link, spec_choice, through_app

through_app(__file__)

ss = st.session_state
KEY = "live_session"
REFRESH = "1s"
IDLE_TIMEOUT = 300.0
DEFAULT_SCENARIO = "quickstart"
#: The first pace is the default: 600 steps in about a minute, time to edit a threshold
#: mid-run and watch the state diagram follow.
PACES = {"10 steps/s": 10.0, "20 steps/s": 20.0, "50 steps/s": 50.0, "5 steps/s": 5.0,
         "full speed": None}
STATE_BOX = {"running": st.info, "finished": st.success, "stopped": st.warning,
             "error": st.error, "idle": st.info}


def available_devices() -> list[str]:
    """"auto" plus every device this machine can honour."""
    out = []
    for name in DEVICE_CHOICES:
        try:
            pick_device(name)
        except SpecError:
            continue
        out.append(name)
    return out


def start_run(scenario: str, lr: float, steps: int, seed: int, device: str, pace: str,
              spec: GuardSpec) -> None:
    """Stop this session's previous run, then start a new one."""
    stop_run()
    try:
        ss[KEY] = LiveSession(scenario, lr, seed=seed, steps=steps, device=device, spec=spec,
                              idle_timeout=IDLE_TIMEOUT, max_rate=PACES[pace]).start()
        ss["live_origin"] = spec          # live edits are named against it
        ss.pop("live_error", None)
    except (SpecError, RuntimeError) as exc:
        ss["live_error"] = f"Could not start: {exc}"


def stop_run() -> None:
    live = ss.get(KEY)
    if live is not None and not live.stop():
        ss["live_error"] = "The run did not stop within 10 s; it will end after its step."


def controls(running: bool) -> tuple:
    """Scenario, LR, steps, seed, device, pace and spec pickers → start_run's arguments."""
    names = list_scenarios()
    a, b, c, d = st.columns([2, 1, 1, 1])
    name = a.selectbox("Scenario", names, key="live_scenario", disabled=running,
                       index=names.index(DEFAULT_SCENARIO) if DEFAULT_SCENARIO in names else 0)
    sc = load_scenario(name)
    a.caption(sc.description)
    lr = b.number_input("Learning rate", 1e-6, 10.0, float(sc.lrs[0]), format="%.2e",
                        key=f"live_lr_{name}", disabled=running)
    steps = c.number_input("Steps", 10, 20_000, max(sc.steps, 600), step=100,
                           key=f"live_steps_{name}", disabled=running)
    seed = d.number_input("Seed", 0, 10_000, 0, key="live_seed", disabled=running)
    a, b, c = st.columns([1, 1, 2])
    device = a.selectbox("Device", available_devices(), key="live_device", disabled=running,
                         help="auto picks cuda → mps → cpu")
    b.caption(f"Runs on **{device_label(pick_device(device))}**")
    pace = b.selectbox("Pace", list(PACES), key="live_pace", disabled=running,
                       help="Slow the run down to watch it; the training is the same.")
    with c:
        spec = spec_choice("Guard spec", key="live_spec")
        live = ss.get(KEY)
        if running and live is not None:   # the spec deciding now, live edits included
            st.caption(f"Deciding now: `{live.spec.name}` · hash `{live.spec.hash}`"
                       + (" (edited during the run)" if live.spec.hash != spec.hash else ""))
        else:
            st.caption(f"`{spec.name}` · hash `{spec.hash}`")
    return name, float(lr), int(steps), int(seed), device, pace, spec


def threshold_form(live: LiveSession) -> None:
    """The guarded arm's thresholds, editable while it runs; Apply → `set_spec`."""
    spec = live.spec
    with st.form(f"live_thresholds_{live.thread.name}", border=True):
        st.markdown("**Thresholds** — applied to the guarded run from its next step")
        cols = st.columns(min(len(spec.thresholds), 5) or 1)
        values = {}
        for i, (k, v) in enumerate(spec.thresholds.items()):
            values[f"thresholds.{k}"] = cols[i % len(cols)].number_input(
                k, value=float(v), format="%.4g", key=f"live_thr_{live.thread.name}_{k}")
        if st.form_submit_button("Apply thresholds", icon=":material/tune:"):
            try:
                new = spec.with_values(values)
                origin = ss.get("live_origin") or spec
                new = new.renamed(changed_name(origin, new))
            except SpecError as exc:
                st.error(f"Not applied: {exc}")
                return
            if new.hash != spec.hash:
                live.set_spec(new)
                ss["live_applied"] = (f"Spec `{new.hash}` takes over at the next step (see "
                                      "`spec_hash` in the trace).")
                st.rerun()        # every caption that names the spec follows the edit
    if ss.get("live_applied"):
        st.success(ss.pop("live_applied"))


def status_box(snap: Snapshot) -> None:
    state, msg = snap.status.state, snap.status.message
    STATE_BOX[state](f"**{state.capitalize()}** — {msg}" if msg else state.capitalize())


def metrics(snap: Snapshot) -> None:
    g, p = snap.guarded, snap.plain
    last = lambda df, col: f"{df[col].iloc[-1]:.4g}" if len(df) else "–"
    a, b, c, d = st.columns(4)
    a.metric("Step", snap.steps)
    b.metric("Guard regime", str(g["regime"].iloc[-1]) if len(g) else "–")
    c.metric("Guarded loss", last(g, "loss"))
    d.metric("Plain loss", last(p, "loss"))
    for arm, why in snap.ended.items():
        df = g if arm == "guarded" else p
        st.caption(f"The {arm} run ended at step {int(df['step'].iloc[-1])}: {why}.")


def state_machine(live: LiveSession, snap: Snapshot) -> None:
    """The guard's state diagram at the run's latest step: its regime outlined, the edge it
    last took drawn thick, and why, beside it."""
    g = snap.guarded
    if not len(g) or "regime" not in g:
        return
    now = moment(g, int(g["step"].iloc[-1]))
    left, right = st.columns([3, 2])
    with left:
        st.graphviz_chart(to_dot(live.spec, active=now.regime, taken=now.taken),
                          width="stretch")
    with right:
        st.markdown("**The guard now**")
        st.markdown(now.sentence())
        notes = fault_notes(g, live.spec, live.scenario.faults)
        if notes:
            st.markdown("**The scenario's faults so far**")
            st.markdown("\n".join(f"- {n}" for n in notes))
        st.caption(f"Deciding with `{live.spec.name}` · hash `{live.spec.hash}`. The thick "
                   "outline is the regime it is in; the thick edge the transition it last "
                   "took. " + glossary_link())


@st.fragment(run_every=REFRESH if (ss.get(KEY) and ss[KEY].running) else None)
def live_view() -> None:
    """Redrawn every second while running; a full rerun once the run ends."""
    live = ss.get(KEY)
    if live is None:
        return
    snap = live.snapshot()
    if not snap.status.running and ss.get("live_drawn_running"):
        st.rerun()  # the run ended: redraw the page (controls, no more ticking)
    status_box(snap)
    metrics(snap)
    if snap.steps == 0:
        st.caption("Building the model and data…")
        return
    for chart in live_charts(snap.guarded, snap.plain, live.spec, snap.ended):
        st.vega_lite_chart(chart, width="stretch")
    state_machine(live, snap)
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Guard transitions and their causes**")
        st.dataframe(transitions_table(snap.guarded), hide_index=True, height=200,
                     width="stretch", column_config={
                         "step": st.column_config.NumberColumn("step", width="small"),
                         "regime": st.column_config.TextColumn("regime", width="small"),
                         "cause": st.column_config.TextColumn("cause", width="large")})
    with right:
        st.markdown("**Spec edits during the run**")
        for c in snap.spec_changes:
            st.markdown(f"- step {c.step}: `{c.old_hash}` → `{c.new_hash}` "
                        f"({'; '.join(c.changes) or 'same thresholds'})")
        if not snap.spec_changes:
            st.caption("None yet: change a threshold below and apply it.")

st.title("Live training")
st.markdown("The same model trained twice at once — with the scenario's **plain** optimizer "
            "(AdamW in most) and with the same optimizer **under the guard** — from the same "
            "weights, on the same batches in the same order, with the scenario's faults. The "
            "charts follow the run every second; thresholds can be changed while it trains.")
live: LiveSession | None = ss.get(KEY)
running = bool(live and live.running)
ss["live_drawn_running"] = running
args = controls(running)
a, b, c = st.columns([1, 1, 4])
if a.button("Start", type="primary", icon=":material/play_arrow:", key="live_start",
            disabled=running, width="stretch"):
    start_run(*args)
    st.rerun()
if b.button("Stop", icon=":material/stop:", key="live_stop", disabled=not running,
            width="stretch"):
    stop_run()
    st.rerun()
if ss.get("live_error"):
    st.error(ss["live_error"])
if live is None:
    st.info("Press **Start** to train. The quickstart scenario (a 2-layer GPT with a "
            "corrupted batch at step 70 and NaN gradients at step 80) shows the difference "
            "within seconds on a CPU; beside the state diagram the page says what the guard "
            "did at each fault, or why it did not react.")
    st.stop()
with c:
    # Bytes made here, never a deferred callable: a generated file is unreferenced and the
    # once-a-second redraws of every session prune it before a slow browser fetches it.
    # While training, a snapshot is taken on request; once stopped, the final trace.
    snap = ss.get("live_csv")
    if running:
        if st.button("Snapshot the trace for download", key="live_snapshot",
                     icon=":material/photo_camera:"):
            snap = ss["live_csv"] = (id(live), live.trace_csv().encode())
    elif snap is None or snap[0] != (id(live), "final"):
        snap = ss["live_csv"] = ((id(live), "final"), live.trace_csv().encode())
    if snap is not None and snap[0] in (id(live), (id(live), "final")):
        st.download_button("Download trace (CSV)", data=snap[1], on_click="ignore",
                           file_name=f"live_{live.scenario.name}_lr{live.lr:g}_seed"
                                     f"{live.seed}.csv",
                           mime="text/csv", icon=":material/download:", key="live_download")
live_view()
threshold_form(live)
st.caption(f"Run `{live.thread.name}` on {live.device_label}: {live.scenario.name}, "
           f"LR {live.lr:g}, seed {live.seed}, {live.steps} steps. The trace has both arms "
           "(`arm` column); every guarded row carries the hash of the spec that decided it.")
