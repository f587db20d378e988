"""A round's process and what the store says about rounds: liveness, who may start, the parent policy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from rlhf.errors import RoundError
from rlhf.settings import Settings
from storage import Store
from storage.errors import NotFoundError
from storage.records import RoundRecord


# ----------------------------------------------------------------------------------- processes
def gpu_visible() -> bool:
    """Whether an NVIDIA GPU looks usable here, without importing torch (the app's pages stay light)."""
    return shutil.which("nvidia-smi") is not None and bool(os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip())


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id is running (a zombie counts as gone; our own children are reaped)."""
    if not pid or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reaps it when it is our finished child
        if done == pid:
            return False
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state not in ("Z", "X")
    return True


def effective_status(record: RoundRecord) -> str:
    """The status to show: a 'running' round whose process is gone is 'interrupted'."""
    if record.status == "running" and not pid_alive(record.pid):
        return "interrupted"
    return record.status


# ----------------------------------------------------------------------------------- store reads
def usable_label_count(store: Store) -> int:
    """Current, non-re-show A/B labels on non-gold pairs of training contexts: what the reward model can
    learn from (``rlhf.reward.dataset``'s rules)."""
    from storage.queue import count_trainable_labels

    with store.transaction() as con:
        return count_trainable_labels(con)


def running_round(store: Store) -> RoundRecord | None:
    """A round whose status is 'running' and whose process is alive, or None."""
    from storage.rounds import list_rounds

    with store.transaction() as con:
        return running_among(list_rounds(con))


def running_among(rounds: list[RoundRecord]) -> RoundRecord | None:
    """The first of ``rounds`` that is 'running' with its process alive, or None."""
    return next((r for r in rounds if r.status == "running" and pid_alive(r.pid)), None)


def still_running(busy: RoundRecord) -> RoundError:
    """The refusal of a second round while ``busy`` runs (one round at a time)."""
    return RoundError(f"Round {busy.round_id} is still running (stage {busy.stage}, pid {busy.pid}). "
                      f"Wait for it to finish or cancel it with `recfeedback round cancel {busy.round_id}`.")


def check_can_start(store: Store, settings: Settings) -> int:
    """Raise RoundError with a clear sentence when a round may not start; return the usable label count.
    Settings a round cannot run with (:func:`settings_problems`) come first."""
    if problems := settings_problems(settings):
        raise RoundError(problems[0])
    busy = running_round(store)
    if busy is not None:
        raise still_running(busy)
    n = usable_label_count(store)
    need = settings.rounds.min_labels
    if n < need:
        raise RoundError(
            f"Only {n} usable labels (A/B choices on non-gold pairs); a round needs at least {need} "
            "(settings.rounds.min_labels). Collect more labels first."
        )
    return n


def settings_problems(settings: Settings) -> list[str]:
    """Why a round could not run with ``settings``, one sentence each (none: it can). PPO's settings and the
    selection mix are checked as wholes (batch_size a multiple of mini_batch_size, some selection share above
    zero): each value may be valid alone, and a bad combination would otherwise fail the round at its PPO or
    select stage, after the reward model has trained. The Training page says them before a click."""
    from rlhf.active import SelectionShares
    from rlhf.ppo.config import PPOConfig

    problems = []
    try:
        PPOConfig.from_settings(settings.ppo, algo="ppo")
    except ValueError as exc:
        problems.append(f"{exc} Fix [ppo] in recfeedback.toml (or its RECFEEDBACK_PPO__* variables).")
    try:
        SelectionShares.from_settings(settings.rounds).as_dict()
    except ValueError as exc:
        problems.append(f"{exc} Set rounds.active_*_share in recfeedback.toml.")
    return problems


def parent_policy_id(store: Store, settings: Settings) -> str:
    """The policy a new round starts from: ``settings.rounds.parent_policy`` when set (checked: a policy of
    this store, on the base model the settings name), else the newest finished round's policy, else the
    base model. Raises :class:`RoundError` for a policy a round cannot start from."""
    from rlhf.generate import default_policy_id
    from storage.generations import find_policy
    from storage.rounds import find_round, list_rounds

    base = default_policy_id(settings.model.policy)
    chosen = settings.rounds.parent_policy
    if chosen == base:
        return base
    with store.transaction() as con:
        if not chosen:
            done = [r for r in list_rounds(con) if r.status == "done" and r.policy_id]
            return done[-1].policy_id if done else base
        found = find_policy(con, chosen)
    if found is None:
        with store.transaction() as con:
            as_round = find_round(con, chosen)
        if as_round is not None and as_round.policy_id:
            raise RoundError(f"{chosen!r} is a round, not a policy: start from its policy, {as_round.policy_id}.")
        raise RoundError(f"No policy with id {chosen!r} to start a round from (settings.rounds.parent_policy); "
                         "`recfeedback policy list` shows them.")
    if found.kind != "llm" or found.base_model != settings.model.policy:
        what = f"a {found.kind}" if found.kind != "llm" else f"trained on {found.base_model!r}"
        raise RoundError(f"A round cannot start from {chosen!r}: it is {what}, and this round's model is "
                         f"{settings.model.policy!r}.")
    return chosen


def startable_policies(store: Store, settings: Settings, summaries: list[Any] | None = None) -> list[Any]:
    """The policies a round may start from (``settings.rounds.parent_policy``), newest first: this store's
    LLM policies on the settings' base model (:class:`rlhf.policies.PolicySummary`, with each round's verdict).
    ``summaries``: :func:`rlhf.policies.policy_summaries` when the caller has read them already."""
    from rlhf.policies import policy_summaries

    summaries = policy_summaries(store) if summaries is None else summaries
    mine = [p for p in summaries if p.kind == "llm" and p.base_model == settings.model.policy]
    return mine[::-1]


def _update_row(store: Store, round_id: str, **fields: Any) -> None:
    from storage.rounds import update_round

    with store.transaction() as con:
        update_round(con, round_id, **fields)


def _get_row(store: Store, round_id: str) -> RoundRecord:
    """The round's row; an unknown id is refused with the round it was probably cut from, if one."""
    from storage.rounds import find_round, list_rounds

    with store.transaction() as con:
        found = find_round(con, round_id)
        if found is not None:
            return found
        near = [r.round_id for r in list_rounds(con) if round_id and r.round_id.startswith(round_id)]
    hint = f"; did you mean {near[-1]}?" if len(near) == 1 else " (`recfeedback round list` shows them)."
    raise NotFoundError(f"No round with id {round_id!r}{hint}")


