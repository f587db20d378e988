"""The page registry: which pages exist, who may open them, and how they appear in the menu.

Adding a page is ONE entry in :data:`REGISTRY` plus its file under ``annotate_app/views/``; the role
rule comes from :data:`rlhf.auth.ROLE_PAGES` (keyed by ``PageEntry.key``). Entries whose file does
not exist yet are skipped, so a page can be registered before it is written. (The folder must not be
called ``pages/``: Streamlit serves a folder of that name by itself, as legacy pages with their own
menu, whenever a URL names one of them, and the log-in would be bypassed as a router.)

Every page is registered with ``st.navigation`` (so a URL always reaches the page's own role check),
but pages the user's role may not open are hidden from the menu. Each page must still start with
``user = ui.require_page("<key>")``: the menu is a convenience, the page check is the rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.auth import can_open

APP_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PageEntry:
    """One page: ``key`` (URL path and ROLE_PAGES key), file relative to annotate_app/, title, icon."""

    key: str
    file: str
    title: str
    icon: str
    section: str = "Work"

    @property
    def path(self) -> Path:
        return APP_DIR / self.file


REGISTRY: tuple[PageEntry, ...] = (
    PageEntry("label", "views/label.py", "Label", ":material/compare_arrows:"),
    PageEntry("agreement", "views/agreement.py", "Agreement", ":material/groups:", "Quality"),
    PageEntry("training", "views/training.py", "Training", ":material/model_training:", "Models"),
    PageEntry("data", "views/data.py", "Data", ":material/database:", "Admin"),
    PageEntry("users", "views/users.py", "Users", ":material/manage_accounts:", "Admin"),
)

DEFAULT_PAGE = "label"
LOGIN_PATH = "login"
#: The app's root ("/"): a hidden page that sends a logged-in user on to the default page. Streamlit serves its
#: default page at "/" only, and answers the default page's own path ("/label") with "Page not found".
HOME_PATH = "home"


def available_pages() -> list[PageEntry]:
    """Registered pages whose file exists."""
    return [p for p in REGISTRY if p.path.is_file()]


def pages_for(role: str) -> list[PageEntry]:
    """The pages a role sees in its menu (existing files that ROLE_PAGES allows)."""
    return [p for p in available_pages() if can_open(role, p.key)]


def build_navigation(role: str) -> dict[str, list]:
    """``st.Page`` objects by menu section for ``st.navigation``: allowed pages visible, others hidden."""
    import streamlit as st

    sections: dict[str, list] = {}
    default_page = None
    for entry in available_pages():
        visible = can_open(role, entry.key)
        page = st.Page(str(entry.path), title=entry.title, icon=entry.icon, url_path=entry.key,
                       visibility="visible" if visible else "hidden")
        sections.setdefault(entry.section, []).append(page)
        if entry.key == DEFAULT_PAGE:
            default_page = page

    def to_default_page() -> None:
        st.switch_page(default_page)

    # "/" and a bookmarked /login met while logged in go on to the default page at its own path. So does the
    # run right after logging in: the caller must then leave the new session cookie for the page it lands on
    # (``redirects``), since switching pages drops what this run drew.
    first = next(iter(sections.values()))
    first.insert(0, st.Page(to_default_page, title="Home", url_path=HOME_PATH, default=True, visibility="hidden"))
    first.append(st.Page(to_default_page, title="Log in", url_path=LOGIN_PATH, visibility="hidden"))
    return sections


def redirects(page: Any) -> bool:
    """Whether ``page`` (from :func:`build_navigation`) only sends the user on to the default page."""
    return getattr(page, "url_path", None) in ("", LOGIN_PATH)  # the default page (HOME_PATH) is served at ""


def login_navigation(login_page: Callable[[], None]) -> list:
    """``st.Page`` objects for a logged-out visitor: the log-in form at ``/``, ``/login`` and every
    page's URL path. A bookmarked ``/training`` then shows the log-in form instead of Streamlit's
    "Page not found", and after log-in the same path resolves to the real page."""
    import streamlit as st

    # The default page is served at "/" whatever its url_path, so /login needs a page of its own.
    pages = [st.Page(login_page, title="Log in", icon=":material/login:", url_path="signin", default=True)]
    pages += [st.Page(login_page, title="Log in", icon=":material/login:", url_path=path)
              for path in (LOGIN_PATH, *(entry.key for entry in available_pages()))]
    return pages
