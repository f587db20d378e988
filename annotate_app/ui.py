"""Shared helpers for the app's pages: the store, the logged-in user, role checks, safe text rendering.

Session state keys used here (all prefixed ``auth.``):

- ``auth.user``   -- the logged-in :class:`storage.records.Annotator` (re-read from the store every run,
                     so a deactivated account or a changed role takes effect at once).
- ``auth.notice`` -- a one-shot message for the login page (e.g. after log-out).

Log-in survives a page reload and a deep link (``/users``) through a signed cookie
(``recfeedback_session``: user, expiry, HMAC-SHA256 with a per-store secret kept in the data folder).
The cookie carries no password and is refused once expired, tampered with, or the account is inactive.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

import streamlit as st
import streamlit.components.v1 as components

from rlhf import auth
from rlhf.annotation import COPIED_LINE_BADGE, ShownItem
from rlhf.runtime import open_store
from rlhf.settings import Settings, get_settings
from storage import Store
from storage.errors import StoreError
from storage.records import Annotator

log = logging.getLogger(__name__)

SESSION_COOKIE = "recfeedback_session"
SESSION_DAYS = 7
PAGE_TITLES = {
    "label": "Label", "users": "Users", "data": "Data", "agreement": "Agreement", "training": "Training",
}


# ---------------------------------------------------------------- resources


@st.cache_resource(show_spinner=False)
def _store_for(path: str) -> Store:
    return open_store(get_settings())


def settings() -> Settings:
    """The process's settings (read once per process)."""
    return get_settings()


def store() -> Store:
    """The configured store, opened (and migrated) once per process."""
    return _store_for(str(settings().store.db_path.resolve()))


# ---------------------------------------------------------------- log-in and roles


def _secret() -> bytes:
    """The per-data-folder signing key for session cookies (created on first use, mode 0600)."""
    path = Path(settings().store.data_dir) / ".app_secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def make_session_token(user_id: str, *, now: float | None = None) -> str:
    """A signed, expiring token naming a user (the value of the session cookie)."""
    body = json.dumps({"u": user_id, "exp": int((now or time.time()) + SESSION_DAYS * 86400)}).encode()
    payload = base64.urlsafe_b64encode(body).decode().rstrip("=")
    sig = hmac.new(_secret(), payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{sig}"


def read_session_token(token: str | None) -> str | None:
    """The user named by a valid, unexpired token, else None."""
    if not token or "." not in token:
        return None
    payload, sig = token.rsplit(".", 1)
    expected = hmac.new(_secret(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(sig, expected):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    if int(data.get("exp", 0)) < time.time():
        return None
    return str(data.get("u") or "") or None


def run_js(script: str, key: str) -> None:
    """Run a trusted script of ours in the page (an invisible same-origin iframe reaching window.parent).

    Only constant code and values we produced (signed tokens) go here -- never catalogue or model text.
    """
    st.html(f"<style>.st-key-{key} {{ display: none; }}</style>")
    with st.container(key=key):
        html_doc = f"<script>{script}</script>"
        if hasattr(st, "iframe"):
            st.iframe(html_doc, height=1)
        else:  # Streamlit before st.iframe
            components.html(html_doc, height=0)


def install_page_script(script: str, key: str) -> None:
    """Install a trusted script of ours into the page itself, once per browser tab.

    A listener added from inside :func:`run_js`'s iframe belongs to that iframe and dies with it, and
    Streamlit may remount the iframe on a rerun -- the page would lose the behaviour while looking the
    same. The script is therefore copied into the parent document, where it lives as long as the tab.
    ``key`` names both the hidden container and the page flag that makes installing idempotent.
    """
    flag = f"__rf_installed_{key}"
    source = json.dumps(script).replace("</", "<\\/")  # a literal "</script>" must not end the carrier
    loader = (
        "const doc = window.parent.document;"
        f"if (!doc.{flag}) {{"
        f"  doc.{flag} = true;"
        "  const s = doc.createElement('script');"
        f"  s.textContent = {source};"
        "  doc.head.appendChild(s);"
        "}"
    )
    run_js(loader, key=key)


def _set_cookie(value: str, max_age: int) -> None:
    """Set (or clear, with max_age 0) the session cookie from the browser side."""
    cookie = f"{SESSION_COOKIE}={value}; path=/; max-age={max_age}; SameSite=Strict"
    run_js(f"window.parent.document.cookie = {json.dumps(cookie)};", key="rf_cookie_js")


def _cookie_token() -> str | None:
    try:
        return st.context.cookies.get(SESSION_COOKIE)
    except Exception:  # noqa: BLE001 - no browser context (AppTest, bare mode)
        return None


def current_user() -> Annotator | None:
    """The logged-in, active account, refreshed from the store; None when nobody is logged in."""
    user: Annotator | None = st.session_state.get("auth.user")
    user_id = user.annotator_id if user else None
    if user_id is None and not st.session_state.get("auth.logged_out"):
        user_id = read_session_token(_cookie_token())
    if user_id is None:
        return None
    try:
        with store().transaction() as con:
            from storage.users import get_annotator

            fresh = get_annotator(con, user_id)
    except StoreError:
        fresh = None
    if fresh is None or not fresh.active:
        st.session_state.pop("auth.user", None)
        return None
    st.session_state["auth.user"] = fresh
    return fresh


def login_page() -> None:
    """The log-in form (the only page before log-in)."""
    s = settings()
    st.title(s.app.title)
    one_shot_notice("auth.notice")
    try:
        if not auth.anyone_can_log_in(store()):
            st.info(auth.NO_ACCOUNTS, icon=":material/person_add:")
    except StoreError:
        log.warning("Could not count the accounts for the log-in page", exc_info=True)
    with st.form("login_form"):
        username = st.text_input("User name", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        try:
            user = auth.authenticate(store(), username.strip(), password)
        except auth.AuthError as exc:
            st.error(str(exc))
            return
        st.session_state["auth.user"] = user
        st.session_state.pop("auth.logged_out", None)
        st.session_state["auth.new_cookie"] = make_session_token(user.annotator_id)
        st.rerun()
    if s.app.oidc_enabled and hasattr(st, "login"):
        st.divider()
        st.button("Log in with your organisation", on_click=st.login)


def one_shot_notice(key: str, kind: str = "info") -> None:
    """Show, once, the message a callback left in ``st.session_state[key]``: a text, or ``(kind, text)``
    with kind one of info / success / warning / error.

    The message goes into a placeholder that every run creates, shown or not, so that the page below keeps
    its element positions when the message goes away (see :func:`sync_cookie`).
    """
    slot = st.empty()
    notice = st.session_state.pop(key, None)
    if notice:
        kind, text = notice if isinstance(notice, tuple) else (kind, notice)
        getattr(slot, kind)(text)


def sync_cookie() -> None:
    """Write a pending session cookie (after log-in) into the browser.

    The script's elements go into one placeholder that every run creates, written or not: Streamlit
    remounts an element whose position changes, so a run without them would otherwise shift the whole
    page by one and close every expander on it at the first click after logging in.
    """
    slot = st.empty()
    token = st.session_state.pop("auth.new_cookie", None)
    clear = st.session_state.pop("auth.clear_cookie", False)
    if token or clear:  # never both: logging out drops every auth.* key before asking to clear
        with slot.container():
            if clear:
                _set_cookie("", 0)
            else:
                _set_cookie(token, SESSION_DAYS * 86400)


def logout() -> None:
    """Log out: give back held pairs, forget the user and the cookie."""
    user: Annotator | None = st.session_state.get("auth.user")
    if user is not None:
        try:
            from rlhf.annotation import release_tasks

            release_tasks(store(), user.annotator_id)
        except StoreError:
            pass
    for key in [k for k in st.session_state if str(k).startswith(("auth.", "label."))]:
        del st.session_state[key]
    st.session_state["auth.logged_out"] = True
    st.session_state["auth.clear_cookie"] = True
    st.session_state["auth.notice"] = "You are logged out."


def require_page(page_key: str) -> Annotator:
    """Stop the page unless a user with a role that may open it is logged in (checked on EVERY page)."""
    user = current_user()
    if user is None:
        st.warning("Please log in first.")
        st.stop()
    if not auth.can_open(user.role, page_key):
        title = PAGE_TITLES.get(page_key, page_key)
        st.error(f"Access denied: your role ({user.role}) cannot open the {title} page.")
        st.stop()
    return user


# ---------------------------------------------------------------- safe rendering


def esc(text: Any) -> str:
    """HTML-escape untrusted text (catalogue titles, model reasons) for st.html: markup shows literally."""
    return html.escape("" if text is None else str(text), quote=True)


_MD_SPECIAL = set("\\`*_{}[]()#+-.!|<>~$:=\"'&")


def md_escape(text: Any) -> str:
    """Backslash-escape markdown punctuation so untrusted text renders literally inside st.markdown."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in ("" if text is None else str(text)))


#: The columns that hold a round's verdicts against the zero-shot model, as sentences.
VERDICT_COLUMNS = ("ndcg_vs_zero_shot", "reasons_vs_zero_shot")
#: A round's human win rate in words and its interval (``rlhf.human_eval``): empty until annotators label a
#: pair of it that no model chose.
HUMAN_WIN_COLUMNS = ("human_win", "human_win_rate", "human_win_interval")


def with_verdicts_said(frame: Any) -> Any:
    """``frame`` with an empty verdict (a round whose report predates the measure, or has none) written
    as "not measured", and an empty human win rate as "no labels yet", not as a bare None in the table. A
    numeric win rate is written as a percentage, so that the column holds text only."""
    if "human_win_rate" in frame:
        rates = frame["human_win_rate"]
        frame = frame.assign(human_win_rate=rates.map("{:.0%}".format, na_action="ignore"))
    filled = {c: "not measured" for c in VERDICT_COLUMNS if c in frame}
    filled.update({c: "no labels yet" for c in HUMAN_WIN_COLUMNS if c in frame})
    return frame.fillna(filled)


def price(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}"


#: Styles of recommendation lists as the Label and Training pages draw them (st.html once per page).
LIST_CSS = """<style>
.rf-list { display: flex; flex-direction: column; gap: .2rem; }
.rf-item { border: 1px solid rgba(128,128,128,.35); border-radius: .5rem; padding: .45rem .6rem; }
.rf-item .rf-title { font-weight: 600; }
.rf-item .rf-meta { color: rgba(120,120,120,1); font-size: .85rem; }
.rf-item .rf-reason { margin-top: .2rem; }
.rf-badge { display: inline-block; background: #fde2e1; color: #8a1c17; border-radius: .6rem;
            padding: 0 .45rem; margin-left: .3rem; font-size: .75rem; font-weight: 600; }
.rf-hit { display: inline-block; background: #dcf5e3; color: #14532d; border-radius: .6rem;
          padding: 0 .45rem; margin-left: .3rem; font-size: .75rem; font-weight: 600; }
.rf-note { display: inline-block; background: rgba(128,128,128,.18); border-radius: .6rem;
           padding: 0 .45rem; margin-left: .3rem; font-size: .75rem; font-weight: 600; }
.rf-problems { margin-bottom: .3rem; }
table.rf-table { border-collapse: collapse; width: 100%; font-size: .9rem; }
table.rf-table td, table.rf-table th { border-bottom: 1px solid rgba(128,128,128,.25); padding: .15rem .4rem;
            text-align: left; }
</style>"""


def item_html(item: ShownItem, *, bought_later: bool = False, off_topic: bool = False, copied: bool = False) -> str:
    """One listed item as a card: rank, title, problem badges (and, where the evaluation knows them, a
    "bought later" mark and an "off-topic reason" or "reason only names a product" mark), category, price
    and attributes, and the policy's reason; all text escaped."""
    # A problem (red) makes the list invalid; the product-line hint (grey) leaves it valid.
    badges = "".join(f'<span class="{"rf-note" if b == COPIED_LINE_BADGE else "rf-badge"}">{esc(b)}</span>'
                     for b in item.badges)
    if off_topic:
        badges += '<span class="rf-note">off-topic reason</span>'
    if copied:
        badges += f'<span class="rf-note">{esc(COPIED_LINE_BADGE)}</span>'
    if bought_later:
        badges += '<span class="rf-hit">bought later</span>'
    meta = " · ".join(esc(x) for x in (item.category or "", price(item.price), *item.attributes) if x)
    return (
        f'<div class="rf-item"><div class="rf-title">{item.rank}. {esc(item.title)}{badges}</div>'
        f'<div class="rf-meta">{meta}</div><div class="rf-reason">{esc(item.reason)}</div></div>'
    )
