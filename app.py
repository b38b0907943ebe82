"""LBW Studio — `streamlit run app.py`. Routes to the pages in pages/ with st.navigation."""

import streamlit as st

from pages.common import ROUTED, WANTED

st.set_page_config(page_title="LBW Studio", page_icon=":material/shield:", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/shield:", default=True),
    st.Page("pages/designer.py", title="Guard designer", icon=":material/tune:"),
    st.Page("pages/regimes.py", title="Regimes", icon=":material/traffic:"),
    st.Page("pages/replay.py", title="Replay", icon=":material/replay:"),
    st.Page("pages/tune.py", title="Tune", icon=":material/query_stats:"),
    st.Page("pages/trajectories.py", title="Trajectories", icon=":material/route:"),
    st.Page("pages/live.py", title="Live training", icon=":material/monitor_heart:"),
    st.Page("pages/stress.py", title="Stress suite", icon=":material/speed:"),
    st.Page("pages/faults.py", title="Faults", icon=":material/bolt:"),
    st.Page("pages/review.py", title="Review a change", icon=":material/rule:"),
    st.Page("pages/glossary.py", title="Glossary", icon=":material/menu_book:"),
]
nav = st.navigation(pages)
st.session_state[ROUTED] = True           # pages opened the legacy way come back here
wanted = st.session_state.pop(WANTED, None)
if wanted is not None:
    st.switch_page(f"pages/{wanted}.py")
nav.run()
