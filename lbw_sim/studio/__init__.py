"""The studio's core: what the pages compute, without streamlit.

Above guard, sim and traces, below the figures (`lbw_sim.viz`) and the pages: the designer's
spec tables (`editor`), hysteresis bands of a spec (`bands`), uploaded bytes -> trace
(`uploads`), threshold sweeps for the Tune page (`tune`) and incident labels (`labels`).
Never imports streamlit.
"""
