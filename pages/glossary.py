"""Glossary: the few words every page uses (`lbw_sim.studio.glossary`)."""

import streamlit as st

from lbw_sim.studio.glossary import glossary_markdown
from pages.common import through_app

through_app(__file__)

st.title("Glossary")
st.markdown("The words the studio uses, in plain language; the identifier a spec or a "
            "table uses for each is beside it.")
st.markdown(glossary_markdown())
