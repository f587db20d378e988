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


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise AuthError("A password needs at least 8 characters.")
    return _hasher.hash(password)


def create_user(
    store: Store, username: str, password: str, role: str, *, display_name: str | None = None, kind: str = "human"
) -> Annotator:
    """Create an account with a hashed password."""
    if not _USERNAME.match(username):
        raise AuthError("A user name is 2-64 letters, digits or . _ - @.")
    if role not in ROLES:
        raise AuthError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    user = Annotator(annotator_id=username, role=role, display_name=display_name or username, kind=kind)
    digest = hash_password(password)
    with store.transaction() as con:
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


def set_password(store: Store, username: str, password: str) -> None:
    digest = hash_password(password)
    with store.transaction() as con:
        users_repo.update_annotator(con, username, password_hash=digest)


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


def set_role(store: Store, username: str, role: str) -> None:
    """Change an account's role (admin action)."""
    if role not in ROLES:
        raise AuthError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    with store.transaction() as con:
        users_repo.update_annotator(con, username, role=role)


def set_active(store: Store, username: str, active: bool) -> None:
    """Deactivate (or re-activate) an account: a deactivated user cannot log in; their labels stay."""
    with store.transaction() as con:
        users_repo.update_annotator(con, username, active=bool(active))


def can_open(role: str, page: str) -> bool:
    """Whether a role may open a page (by its key in ROLE_PAGES)."""
    return page in ROLE_PAGES.get(role, frozenset())
