"""LBW Studio — `streamlit run app.py`. Routes to the pages in pages/ with st.navigation."""

import streamlit as st

st.set_page_config(page_title="LBW Studio", page_icon="🛡️", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon="🛡️", default=True),
    st.Page("pages/designer.py", title="Guard designer", icon="🎛️"),
    st.Page("pages/regimes.py", title="Regimes", icon="🚦"),
    st.Page("pages/replay.py", title="Replay", icon="⏪"),
    st.Page("pages/trajectories.py", title="Trajectories", icon="🧭"),
]
st.navigation(pages).run()
