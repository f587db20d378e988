"""A manager's answer to a flagged annotator: exclude their labels, or lift that again.

The Agreement page flags suspect annotators (too fast, one side always, low gold accuracy, ...); aggregation
only down-weights them. Excluding an annotator retracts every label they gave (the labels stay in the store
as facts, with who excluded them and when), so that they stop counting in agreement, aggregation, reward
models and exports, re-opens the pairs that fall below their overlap, and by default deactivates the account
so that no new label arrives. Restoring lifts the exclusion: nothing is lost either way. Used by the
Agreement page and ``recfeedback users exclude|restore``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rlhf.errors import RecFeedbackError
from rlhf.wording import counted
from storage import Store
from storage import queue as queue_repo
from storage import users as users_repo
from storage.errors import NotFoundError
from storage.records import Annotator, ExcludedAnnotator


@dataclass(frozen=True)
class Exclusion:
    """What an exclusion (or its lifting) did to one annotator."""

    annotator_id: str
    labels: int
    restored: bool = False
    account_changed: bool = False
    #: After a restore: the account is still deactivated (it was not asked to be reactivated).
    still_inactive: bool = False
    #: The account's role when it is not an annotator's, so an exclusion left it active (see exclude_annotator).
    kept_role: str | None = None

    def sentence(self) -> str:
        labels = f"{counted(self.labels, 'label')} of {self.annotator_id}"
        if self.restored:
            if self.labels == 0:
                return f"Nothing to restore: no label of {self.annotator_id} is excluded."
            account = ", and the account is active again" if self.account_changed else ""
            inactive = (f" {self.annotator_id}'s account stays deactivated, so they cannot log in; an admin can "
                        "reactivate it on the Users page.") if self.still_inactive else ""
            return (f"{labels} count again{account}; pairs that reach their overlap with them are complete "
                    f"again.{inactive}")
        account = "; the account is deactivated" if self.account_changed else ""
        if self.kept_role:
            account = (f"; {self.annotator_id}'s {self.kept_role} account stays active (an admin can deactivate "
                       "it on the Users page)")
        if self.labels == 0:
            return f"Nothing to exclude: {self.annotator_id} has no label that counts{account}."
        return (f"Excluded {labels}: they no longer count in agreement, "
                f"aggregation, reward models or exports, and their pairs re-open for others{account}. "
                "Nothing is deleted: restore them any time.")


def exclude_annotator(store: Store, annotator_id: str, *, by: str, deactivate: bool = True,
                      now: datetime | None = None) -> Exclusion:
    """Retract every current label of ``annotator_id`` in one unit of work, give back their leases and (with
    ``deactivate``) deactivate their account. ``by`` is recorded on each retraction. Imported labels' annotators
    may have no account: their labels are excluded all the same.

    Only an annotator's account is deactivated: an engineer's, manager's or admin's labels are excluded but the
    account stays, since deactivating those is an admin's decision on the Users page (and deactivating the only
    admin would leave nobody who can log in to undo it)."""
    if annotator_id == by:
        raise RecFeedbackError("You cannot exclude your own labels; ask another manager.")
    with store.transaction() as con:
        account = _account(con, annotator_id)
        n = queue_repo.exclude_labels_of(con, annotator_id, by=by, now=now)
        if account is None and n == 0:
            raise NotFoundError(f"No annotator named {annotator_id!r}: no account and no label.")
        kept_role = account.role if account and deactivate and account.role != "annotator" else None
        changed = bool(account and deactivate and account.active and kept_role is None)
        if account is not None:
            queue_repo.release_leases(con, annotator_id, now=now)
        if changed:
            users_repo.update_annotator(con, annotator_id, active=False)
    return Exclusion(annotator_id, n, account_changed=changed, kept_role=kept_role)


def restore_annotator(store: Store, annotator_id: str, *, reactivate: bool = False) -> Exclusion:
    """Lift an exclusion: the annotator's excluded labels count again (undone ones stay undone)."""
    with store.transaction() as con:
        account = _account(con, annotator_id)
        n = queue_repo.restore_labels_of(con, annotator_id)
        if account is None and n == 0:
            raise NotFoundError(f"No annotator named {annotator_id!r}: no account and no excluded label.")
        changed = bool(account and reactivate and not account.active)
        if changed:
            users_repo.update_annotator(con, annotator_id, active=True)
    return Exclusion(annotator_id, n, restored=True, account_changed=changed,
                     still_inactive=bool(account and not account.active and not changed))


def _account(con: Any, annotator_id: str) -> Annotator | None:
    try:
        return users_repo.get_annotator(con, annotator_id)
    except NotFoundError:
        return None


def excluded_annotators(store: Store) -> dict[str, ExcludedAnnotator]:
    """Annotators with excluded labels, by id: how many, who excluded them and when; the latest first."""
    with store.transaction() as con:
        return {row.annotator_id: row for row in queue_repo.excluded_annotators(con)}
