"""The studio: an interactive editor of a run's samples (``python evaluate.py task=studio run=RUN_DIR``).

:mod:`panda.studio.core` holds the editing logic as pure functions of a per-session state (no web
framework, testable without a browser); :mod:`panda.studio.app` lays it out as a Gradio page and serves it.
"""
