"""The first pairs of a new store, written by the real policy so that annotators never meet an empty queue.

A store fresh from ``init --demo`` (or an import) has contexts but no lists. ``recfeedback app`` starts
:func:`run_bootstrap` in a background process (:func:`start_bootstrap`) when the store has no pairs; it
samples the policy a few contexts at a time and enqueues each chunk's pairs at once, so the first pair
is ready long before the batch is done. Its progress lives in ``<data_dir>/bootstrap.json`` (written
atomically), which the Label page reads to tell an annotator what is happening instead of "nothing
to label". Nothing here runs SQL: the store is reached through :mod:`rlhf.pairs` and :mod:`storage`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlhf.settings import Settings

log = logging.getLogger(__name__)

State = Literal["idle", "running", "done", "failed"]


@dataclass
class BootstrapStatus:
    """What the first-pairs job has done so far (``idle``: none ever ran for this store)."""

    state: State = "idle"
    contexts_done: int = 0
    contexts_total: int = 0
    pairs: int = 0
    pid: int | None = None
    message: str = ""
    started_at: float | None = None
    updated_at: float | None = None
    policy_id: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.contexts_done / self.contexts_total if self.contexts_total else 0.0


def status_path(settings: Settings) -> Path:
    """Where the job's progress is kept: beside the store, one file per data folder."""
    return Path(settings.data_dir) / "bootstrap.json"


def log_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "bootstrap.log"


def read_status(settings: Settings) -> BootstrapStatus:
    """The last recorded status; a ``running`` job whose process is gone reads as ``failed``."""
    from rlhf.rounds import pid_alive

    path = status_path(settings)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        status = BootstrapStatus(**data)
    except FileNotFoundError:
        return BootstrapStatus()
    except (ValueError, TypeError) as exc:
        log.warning("Unreadable %s (%s); treating the first-pairs job as not started", path, exc)
        return BootstrapStatus()
    if status.state == "running" and status.pid is None and time.time() - (status.started_at or 0) > 120:
        status.state = "failed"
        status.message = f"The first-pairs job never started; see {log_path(settings)}."
    elif status.state == "running" and status.pid and not pid_alive(status.pid):
        status.state = "failed"
        status.message = (f"The first-pairs job (pid {status.pid}) stopped before it finished; "
                          f"see {log_path(settings)}.")
    return status


@contextmanager
def _status_lock(settings: Settings) -> Iterator[None]:
    """Hold the data folder's first-pairs lock: a check of the status and the write that follows it are one step.

    Two apps started on one data folder at once would otherwise both see "no job" and start two jobs,
    and a parent's "Starting" could overwrite what its child had already written.
    """
    path = Path(settings.data_dir) / "bootstrap.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_status(settings: Settings, status: BootstrapStatus) -> None:
    """Record the job's progress (atomically: a reader never sees half a file)."""
    with _status_lock(settings):
        _write_status_unlocked(settings, status)


def _write_status_unlocked(settings: Settings, status: BootstrapStatus) -> None:
    path = status_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    status.updated_at = time.time()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(status), indent=2), encoding="utf-8")
    os.replace(tmp, path)


def queue_is_unstarted(store: Any) -> bool:
    """True when the store has contexts to sample for but no pair has ever been made (a new store)."""
    from storage import catalog as catalog_repo
    from storage.queue import queue_summary

    with store.transaction() as con:
        counts = catalog_repo.data_counts(con)
        summary = queue_summary(con)
    pairs = summary["open_pairs"] + summary["complete_pairs"] + summary["gold_pairs"]
    return counts.get("contexts", 0) > 0 and pairs == 0


def run_bootstrap(
    store: Any,
    settings: Settings,
    *,
    n_pairs: int | None = None,
    chunk_contexts: int | None = None,
    model: Any = None,
    tokenizer: Any = None,
    progress: bool = True,
    on_chunk: Callable[[BootstrapStatus], None] | None = None,
) -> BootstrapStatus:
    """Sample the policy for up to ``n_pairs`` contexts, a chunk at a time, enqueueing pairs as they come.

    The model is loaded once; each chunk's lists and pairs are stored before the next chunk starts,
    so annotators can begin after the first chunk. Progress is written to :func:`status_path` after
    every chunk. Returns the final status (``done``, or ``failed`` with the error's sentence).
    """
    from rlhf.generate import default_policy_id
    from rlhf.pairs import bootstrap_queue

    n_pairs = settings.demo.initial_pairs if n_pairs is None else n_pairs
    chunk = max(1, chunk_contexts or settings.demo.initial_chunk_contexts)
    status = BootstrapStatus(state="running", contexts_total=n_pairs, pid=os.getpid(), started_at=time.time(),
                             policy_id=default_policy_id(settings.model.policy),
                             message="Loading the policy model")
    write_status(settings, status)
    try:
        if model is None or tokenizer is None:
            from rlhf.models import get_policy_model

            m = settings.model
            model, tokenizer = get_policy_model(m.policy, None, device=m.device, dtype=m.dtype,
                                                tokenizer_spec=m.tokenizer)
        while status.contexts_done < n_pairs:
            want = min(chunk, n_pairs - status.contexts_done)
            status.message = f"Writing lists for contexts {status.contexts_done + 1}-{status.contexts_done + want}"
            write_status(settings, status)
            reports = bootstrap_queue(store, settings, want, policy_id=status.policy_id, model=model,
                                      tokenizer=tokenizer, progress=progress)
            if not reports:  # no context left without lists of this policy
                break
            status.contexts_done += want
            status.pairs += sum(r.created for r in reports)
            write_status(settings, status)
            if on_chunk:
                on_chunk(status)
    except Exception as exc:  # the job's last word goes to the status file; the detail to the log
        log.exception("The first-pairs job failed")
        status.state, status.message = "failed", f"{type(exc).__name__}: {exc}"
        write_status(settings, status)
        return status
    status.state = "done"
    status.contexts_total = status.contexts_done  # fewer when the store ran out of contexts
    status.message = f"{status.pairs} pairs written by {status.policy_id} are in the queue"
    write_status(settings, status)
    return status


def start_bootstrap(settings: Settings, store: Any) -> int | None:
    """Start :func:`run_bootstrap` as a detached process when the store needs it; return its pid.

    Does nothing (returns None) when the store already has pairs, has no contexts, or a job is running.
    """
    if settings.demo.initial_pairs <= 0:
        return None
    from rlhf.runtime import spawn_detached

    with _status_lock(settings):
        if read_status(settings).state == "running" or not queue_is_unstarted(store):
            return None
        # Recorded before the job starts, so that a second `recfeedback app` does not start another; the
        # child then writes its own status (with its pid) as soon as it runs.
        _write_status_unlocked(settings, BootstrapStatus(state="running", contexts_total=settings.demo.initial_pairs,
                                                         started_at=time.time(), message="Starting"))
    try:
        pid = spawn_detached(["-c", "from rlhf.cli import main; main()", "pairs", "bootstrap", "--no-progress"],
                             log_path(settings),
                             {"RECFEEDBACK_STORE__DATA_DIR": str(Path(settings.data_dir).resolve())})
    except OSError as exc:  # the Label page says so now, not after two minutes of "Starting"
        write_status(settings, BootstrapStatus(state="failed", contexts_total=settings.demo.initial_pairs,
                                               message=f"The first-pairs job could not start: {exc}"))
        raise
    with _status_lock(settings):
        if read_status(settings).pid is None:  # the child has not written yet: let liveness checks see it
            _write_status_unlocked(settings, BootstrapStatus(
                state="running", contexts_total=settings.demo.initial_pairs, pid=pid, started_at=time.time(),
                message="Starting"))
    log.info("First-pairs job started in the background (pid %d), log in %s", pid, log_path(settings))
    return pid
