"""Accounts and passwords: argon2 hashes, role checks. Passwords are never stored in clear."""

from __future__ import annotations

import logging
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from rlhf.errors import RecFeedbackError
from storage import Store
from storage import users as users_repo
from storage.errors import NotFoundError
from storage.records import ROLES, Annotator

log = logging.getLogger(__name__)
_hasher = PasswordHasher()
_USERNAME = re.compile(r"^[A-Za-z0-9_.\-@]{2,64}$")

#: Pages each role may open; the app checks this on every page, not only in the menu.
ROLE_PAGES: dict[str, frozenset[str]] = {
    "annotator": frozenset({"label"}),
    "engineer": frozenset({"label", "training", "data"}),
    "manager": frozenset({"label", "agreement", "data", "training"}),
    "admin": frozenset({"label", "agreement", "data", "training", "users"}),
}


class AuthError(RecFeedbackError):
    """Login failed or an account operation is not allowed."""


class AccountChangedError(AuthError):
    """An account changed between the form that showed it and the save."""


#: Display names longer than this would crowd the tables that show them.
MAX_DISPLAY_NAME = 80


def hash_password(password: str) -> str:
    """The argon2 hash of an acceptable password: 8 characters or more, not only spaces."""
    if len(password) < 8:
        raise AuthError("A password needs at least 8 characters.")
    if not password.strip():
        raise AuthError("A password cannot be only spaces.")
    return _hasher.hash(password)


def _display_name(display_name: str | None, username: str) -> str:
    """The name shown for an account: trimmed, the user name when none is given."""
    shown = (display_name or "").strip() or username
    if len(shown) > MAX_DISPLAY_NAME:
        raise AuthError(f"A display name has at most {MAX_DISPLAY_NAME} characters.")
    return shown


def create_user(
    store: Store, username: str, password: str, role: str, *, display_name: str | None = None, kind: str = "human"
) -> Annotator:
    """Create an account with a hashed password. A name that differs from an existing one only in case is
    refused: log-in is case-sensitive, so 'ANN1' beside 'ann1' is two people to the store and one to a reader."""
    if not _USERNAME.match(username):
        raise AuthError("A user name is 2-64 characters: ASCII letters, digits or . _ - @.")
    if role not in ROLES:
        raise AuthError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    user = Annotator(annotator_id=username, role=role, display_name=_display_name(display_name, username), kind=kind)
    digest = hash_password(password)
    with store.transaction() as con:
        taken = users_repo.name_taken_ignoring_case(con, username)
        if taken is not None and taken != username:
            raise AuthError(f"A user named {taken!r} already exists; names may not differ only in case.")
        users_repo.insert_annotator(con, user, digest)
    return user


def authenticate(store: Store, username: str, password: str) -> Annotator:
    """The active account for these credentials, or AuthError with a sentence that leaks nothing."""
    with store.transaction() as con:
        try:
            user = users_repo.get_annotator(con, username)
        except NotFoundError:
            user = None
        digest = users_repo.get_password_hash(con, username) if user else None
    if user is None or not digest or not user.active:
        raise AuthError("Unknown user name or wrong password.")
    try:
        _hasher.verify(digest, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        log.info("failed login for %s", username)
        raise AuthError("Unknown user name or wrong password.") from None
    return user


def update_account(store: Store, username: str, *, by: str, role: str | None = None, active: bool | None = None,
                   password: str | None = None, as_shown: Annotator | None = None) -> None:
    """Change an account's role, whether it may log in, and its password (admin action): all of them or, when
    one is refused, none. ``by`` (the admin acting) may not remove their own admin role or deactivate
    themselves, so that a store always keeps an admin who can log in.

    ``as_shown`` is the account as the form showed it: if its role or active state changed since (another
    admin, a manager's restore), nothing is saved and :class:`AccountChangedError` says how it is now, so
    that a stale form never undoes someone else's change."""
    if role is not None and role not in ROLES:
        raise AuthError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    if username == by and ((role is not None and role != "admin") or active is False):
        raise AuthError("You cannot remove your own admin role or deactivate yourself.")
    digest = hash_password(password) if password else None
    with store.transaction() as con:
        if as_shown is not None:
            now = users_repo.get_annotator(con, username)
            if (now.role, now.active) != (as_shown.role, as_shown.active):
                state = "active" if now.active else "deactivated"
                raise AccountChangedError(f"{username} was changed meanwhile: it is now {state}, role {now.role}. "
                                          "Nothing was saved; the form shows it as it is now.")
        users_repo.update_annotator(con, username, role=role, active=active, password_hash=digest)


#: What the log-in page and ``recfeedback app`` say on a store where nobody can log in yet (``recfeedback init``
#: makes no account; ``init --demo`` makes the demo ones).
NO_ACCOUNTS = ("This store has no accounts yet. Create the first admin from a shell, "
               "`recfeedback users add NAME --role admin`, then log in here; the Users page makes the others.")


def anyone_can_log_in(store: Store) -> bool:
    """Whether any active account has a password: a store fresh from ``recfeedback init`` has none."""
    with store.transaction() as con:
        return users_repo.count_password_accounts(con) > 0


def list_users(store: Store) -> list[Annotator]:
    """Every account (humans and simulated annotators), by name."""
    with store.transaction() as con:
        return users_repo.list_annotators(con)


def can_open(role: str, page: str) -> bool:
    """Whether a role may open a page (by its key in ROLE_PAGES)."""
    return page in ROLE_PAGES.get(role, frozenset())
