"""Studio core: what the pages compute, without Streamlit."""
