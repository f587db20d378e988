"""RecFeedback's Streamlit app: ``streamlit run annotate_app/Home.py``.

The entry point only routes: log-in first, then ``st.navigation`` built from the page registry
(:mod:`annotate_app.navigation`), filtered by role. Every page re-checks the role itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(_ROOT))

import streamlit as st

from annotate_app import ui
from annotate_app.navigation import build_navigation, login_navigation, redirects
from rlhf.settings import ConfigError

try:
    title = ui.settings().app.title
except ConfigError as exc:  # a bad settings file or variable: say which, instead of a traceback
    st.error(f"RecFeedback cannot start. {exc}")
    st.stop()
st.set_page_config(page_title=title, page_icon=":material/compare_arrows:", layout="wide")

user = ui.current_user()
if user is None:
    page = st.navigation(login_navigation(ui.login_page), position="hidden")
else:
    page = st.navigation(build_navigation(user.role))
    with st.sidebar:
        st.caption(f"Logged in as **{ui.md_escape(user.display_name or user.annotator_id)}** ({user.role})")
        st.button("Log out", key="auth_logout", on_click=ui.logout, icon=":material/logout:")
if user is None or not redirects(page):  # a redirect's rerun drops the cookie script: the next page writes it
    ui.sync_cookie()
page.run()
