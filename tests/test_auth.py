"""Accounts: names, passwords and changes that an admin makes, all checked before anything is written."""

from __future__ import annotations

import pytest

from rlhf import auth
from rlhf.exclusion import exclude_annotator
from storage import users as users_repo


def _user(store, name: str):
    with store.transaction() as con:
        return users_repo.get_annotator(con, name)


def test_a_name_that_differs_only_in_case_is_refused(store):
    """Log-in is case-sensitive: 'ANN1' beside 'ann1' would be two accounts for one person to a reader."""
    auth.create_user(store, "ann1", "a-long-password", "annotator")
    with pytest.raises(auth.AuthError, match="'ann1' already exists; names may not differ only in case"):
        auth.create_user(store, "ANN1", "a-long-password", "annotator")
    assert [u.annotator_id for u in auth.list_users(store)] == ["ann1"]


@pytest.mark.parametrize(("password", "refusal"), [
    ("        ", "cannot be only spaces"),
    ("short", "at least 8 characters"),
])
def test_a_weak_password_is_refused(store, password, refusal):
    with pytest.raises(auth.AuthError, match=refusal):
        auth.create_user(store, "newbie", password, "annotator")
    assert auth.list_users(store) == []


def test_display_names_are_trimmed_and_bounded(store):
    assert auth.create_user(store, "eve", "a-long-password", "annotator", display_name="     ").display_name == "eve"
    assert auth.create_user(store, "bob", "a-long-password", "annotator", display_name=" Bob B. ").display_name \
        == "Bob B."
    with pytest.raises(auth.AuthError, match="at most 80 characters"):
        auth.create_user(store, "mal", "a-long-password", "annotator", display_name="<script>" * 40)


def test_an_account_change_is_all_or_nothing(store):
    """The Users page used to save the new role and then refuse the short password: half an edit."""
    auth.create_user(store, "ann3", "a-long-password", "annotator")
    with pytest.raises(auth.AuthError, match="at least 8 characters"):
        auth.update_account(store, "ann3", by="boss", role="engineer", active=False, password="abc")
    assert (_user(store, "ann3").role, _user(store, "ann3").active) == ("annotator", True)
    auth.update_account(store, "ann3", by="boss", role="engineer", password="another-password")
    assert auth.authenticate(store, "ann3", "another-password").role == "engineer"


def test_an_admin_cannot_demote_or_deactivate_themselves(store):
    auth.create_user(store, "boss", "a-long-password", "admin")
    for change in ({"role": "manager"}, {"active": False}):
        with pytest.raises(auth.AuthError, match="your own admin role"):
            auth.update_account(store, "boss", by="boss", **change)
    assert (_user(store, "boss").role, _user(store, "boss").active) == ("admin", True)


def test_excluding_an_admins_labels_leaves_the_account_active(store):
    """`users exclude admin` deactivated the only admin: nobody could log in to undo it."""
    auth.create_user(store, "admin", "a-long-password", "admin")
    auth.create_user(store, "spam", "a-long-password", "annotator")
    done = exclude_annotator(store, "admin", by="cli")
    assert _user(store, "admin").active and not done.account_changed
    assert done.sentence() == ("Nothing to exclude: admin has no label that counts; admin's admin account stays "
                               "active (an admin can deactivate it on the Users page).")
    assert exclude_annotator(store, "spam", by="cli").account_changed and not _user(store, "spam").active
