"""LBW Studio — `streamlit run app.py`. Routes to the pages in pages/ with st.navigation."""

import streamlit as st

st.set_page_config(page_title="LBW Studio", page_icon="🛡️", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon="🛡️", default=True),
]
st.navigation(pages).run()
