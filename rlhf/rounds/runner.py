"""Creating, running, resuming, cancelling and launching rounds (in this process or a background one)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from rlhf.errors import RoundError
from rlhf.rounds.layout import (
    FINAL_STATUSES,
    STAGES,
    UTC,
    RoundCancelled,
    RoundPaths,
    _write_json,
    check_round_id,
    load_round_settings,
    new_round_id,
    round_folder,
    save_round_settings,
)
from rlhf.rounds.stages import STAGE_FUNCS, RoundContext, _timings
from rlhf.rounds.state import (
    _get_row,
    _update_row,
    check_can_start,
    effective_status,
    parent_policy_id,
    pid_alive,
    running_among,
    still_running,
)
from rlhf.runtime import jsonable, logging_to
from rlhf.settings import Settings
from storage import Store
from storage.paths import relative_within
from storage.records import RoundRecord

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------- run / resume
def create_round(store: Store, settings: Settings, round_id: str | None = None, *, pid: int | None = None) -> RoundRecord:
    """Check that a round may start, then create its folder and its 'running' rounds row."""
    from rlhf.generate import default_policy_id
    from storage.generations import find_policy
    from storage.rounds import insert_round, list_rounds

    if round_id is not None:
        _check_new_round_id(store, settings, round_id)
    n_labels = check_can_start(store, settings)
    parent = parent_policy_id(store, settings)  # checked before anything is written
    round_id = round_id or new_round_id()
    folder = round_folder(settings, round_id)
    made_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    save_round_settings(settings, folder)
    with store.transaction() as con:
        found = find_policy(con, parent)
    # Relative to the data folder, as the stage markers' paths are: a moved store's round still resumes.
    parent_adapter = relative_within(found.adapter_path, settings.data_dir) if found is not None else None
    meta = {"round_id": round_id, "parent_policy_id": parent, "parent_adapter": parent_adapter,
            "policy_id": f"policy_{round_id.removeprefix('round_')}", "usable_labels_at_start": n_labels,
            "zero_shot_policy_id": default_policy_id(settings.model.policy),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    _write_json(folder / "round.json", meta)
    record = RoundRecord(round_id=round_id, status="running", stage=STAGES[0], config=settings.to_toml_dict(),
                         timings={}, metrics={"usable_labels": n_labels}, parent_policy_id=parent,
                         folder=str(folder.resolve()), pid=pid or os.getpid())
    with store.transaction() as con:
        # Checked again in the unit of work that inserts: of two launches that both passed the check above,
        # one inserts and the other finds it running.
        busy = running_among(list_rounds(con))
        if busy is None:
            insert_round(con, record)
    if busy is not None:
        if made_folder:
            shutil.rmtree(folder, ignore_errors=True)
        raise still_running(busy)
    log.info("Round %s created (parent policy %s, %d usable labels)", round_id, parent, n_labels)
    return record


def _check_new_round_id(store: Store, settings: Settings, round_id: str) -> None:
    """A round id the caller chose: one that can name a folder, and no round's yet (its row or its folder)."""
    from storage.rounds import find_round

    check_round_id(round_id)
    with store.transaction() as con:
        taken = find_round(con, round_id) is not None
    if taken or (round_folder(settings, round_id) / "round.json").exists():
        raise RoundError(f"A round with id {round_id!r} exists already: choose another id, or continue that one "
                         f"with `recfeedback round resume {round_id}`.")


def _install_sigterm() -> Any:
    def handler(signum: int, frame: Any) -> None:
        raise RoundCancelled("Its process was stopped (SIGTERM) before the round finished.")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: no handler, SIGKILL still stops it
        return None


def execute(store: Store, round_id: str, *, progress: bool = True,
            stop_after: str | None = None) -> RoundRecord:
    """Run the stages of an existing round that have no completion marker, in order.

    ``stop_after`` ends the run after that stage (tests, debugging): the round is then 'stopped', with its
    markers, until resumed.
    """
    _check_stage_name(stop_after)
    row = _get_row(store, round_id)
    if row.status in FINAL_STATUSES:  # e.g. cancelled between its launch and its process starting
        raise RoundError(f"Round {round_id} is {row.status}; there is nothing to run.")
    folder = Path(row.folder) if row.folder else None
    if folder is None or not folder.is_dir():
        raise RoundError(f"Round {round_id} has no folder on disk ({row.folder}); it cannot run.")
    settings = load_round_settings(folder, data_dir=store.folder)
    ctx = RoundContext(round_id, settings, store, RoundPaths(folder), progress_bars=progress)
    with logging_to(ctx.paths.log):  # a round run in a terminal keeps its log in its folder too
        _run_stages(ctx, stop_after)
    return _get_row(store, round_id)


def _run_stages(ctx: RoundContext, stop_after: str | None) -> None:
    """The stages without a completion marker, in order; the row records a stop, a cancel or a failure."""
    store, round_id = ctx.store, ctx.round_id
    previous = _install_sigterm()
    current = None
    try:
        for stage in STAGES:
            if ctx.paths.marker(stage).is_file():
                continue
            current = stage
            _start_stage(store, round_id, stage, _timings(ctx))
            ctx.set_progress(stage)
            log.info("Round %s: stage %s", round_id, stage)
            started = time.perf_counter()
            out = STAGE_FUNCS[stage](ctx)
            out["seconds"] = round(time.perf_counter() - started, 3)
            _write_json(ctx.paths.marker(stage), jsonable(out))
            log.info("Round %s: stage %s finished in %.1f s", round_id, stage, out["seconds"])
            if stage == "enqueue":
                # The marker exists now: add the enqueue time to the row's timings.
                _update_row(store, round_id, timings=_timings(ctx))
            if stop_after == stage and stage != STAGES[-1]:
                _update_row(store, round_id, status="stopped", timings=_timings(ctx))  # with this stage's time
                break
        ctx.set_progress("done" if current == "enqueue" or ctx.paths.marker("enqueue").is_file() else (current or ""))
    except BaseException as exc:
        cancelled = _cancellation_in(exc)
        if cancelled is not None:
            # A SIGTERM that lands inside a library (an import, a thread pool) can come back wrapped in that
            # library's error ("Could not import module 'AutoTokenizer'"): it is the cancel all the same.
            log.warning("Round %s cancelled during %s", round_id, current)
            _safe_update(store, round_id, status="cancelled", error=str(cancelled))
            raise cancelled from (None if cancelled is exc else exc)
        message = f"{type(exc).__name__} in stage {current}: {exc}"
        log.exception("Round %s failed", round_id)
        status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
        _safe_update(store, round_id, status=status, error=message[:2000])
        if isinstance(exc, Exception) and not isinstance(exc, RoundError):
            raise RoundError(f"Round {round_id} failed in stage {current}: {exc}") from exc
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _cancellation_in(exc: BaseException | None) -> RoundCancelled | None:
    """The RoundCancelled that ``exc`` is, or that raised it (along its cause or context chain); else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, RoundCancelled):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _check_stage_name(stage: str | None) -> None:
    if stage is not None and stage not in STAGES:
        raise RoundError(f"There is no stage {stage!r}; the stages are {', '.join(STAGES)}.")


def _check_not_past(store: Store, round_id: str, stop_after: str | None) -> None:
    """Refuse to resume a round "until" a stage it has finished already: it would run every stage left."""
    if stop_after is None:
        return
    row = _get_row(store, round_id)
    if row.folder and RoundPaths(Path(row.folder)).marker(stop_after).is_file():
        raise RoundError(f"Round {round_id} has finished its stage {stop_after} already; resume it without "
                         "--stop-after, or stop after a later stage.")


def _start_stage(store: Store, round_id: str, stage: str, timings: dict[str, float]) -> None:
    """Record the stage a round starts, unless a cancel committed since the last one: its SIGTERM may still be
    on the way, and the round must not mark itself running again (nor go on to ingest) in the meantime."""
    from storage.rounds import get_round, update_round

    with store.transaction() as con:
        if get_round(con, round_id).status == "cancelled":
            raise RoundCancelled(f"Round {round_id} was cancelled before its stage {stage}.")
        update_round(con, round_id, stage=stage, status="running", pid=os.getpid(), timings=timings)


def _safe_update(store: Store, round_id: str, **fields: Any) -> None:
    try:
        if _get_row(store, round_id).status == "cancelled":
            return  # `round cancel` already recorded the outcome, in the user's words
        _update_row(store, round_id, **fields)
    except Exception:  # recording the failure must not hide the failure
        log.warning("Could not record the outcome of round %s", round_id, exc_info=True)


def run_round(store: Store, settings: Settings, *, round_id: str | None = None, progress: bool = True,
              stop_after: str | None = None) -> RoundRecord:
    """Start a new round (checks, folder, row) and run it to the end in this process."""
    _check_stage_name(stop_after)  # before the round exists: a misspelt stage must not run a whole round
    if round_id is not None:
        check_round_id(round_id)
        folder = round_folder(settings, round_id)
        if (folder / "settings.json").is_file() and not (folder / "round.json").exists():
            settings = load_round_settings(folder)  # prepared for it (settings a process cannot be given otherwise)
    record = create_round(store, settings, round_id)
    return execute(store, record.round_id, progress=progress, stop_after=stop_after)


def resume_round(store: Store, round_id: str, *, progress: bool = True, stop_after: str | None = None) -> RoundRecord:
    """Continue a failed, cancelled or interrupted round after its last finished stage."""
    _check_stage_name(stop_after)
    _check_not_past(store, round_id, stop_after)
    prepare_resume(store, round_id)
    return execute(store, round_id, progress=progress, stop_after=stop_after)


def prepare_resume(store: Store, round_id: str) -> None:
    """Check that a round may continue and mark it running again (this process's pid until another takes it)."""
    row = _get_row(store, round_id)
    status = effective_status(row)
    if status == "done":
        raise RoundError(f"Round {round_id} is already done.")
    if status == "running":
        raise RoundError(f"Round {round_id} is still running (pid {row.pid}); cancel it first to resume it.")
    from storage.rounds import list_rounds, update_round

    with store.transaction() as con:  # one unit of work: of two resumes at once, one marks it and one is refused
        busy = running_among(list_rounds(con))
        if busy is None:
            update_round(con, round_id, status="running", pid=os.getpid(), error=None, finished_at=None)
    if busy is not None:
        raise RoundError(f"Round {busy.round_id} is running; wait for it or cancel it before resuming {round_id}.")


def cancel_round(store: Store, round_id: str, *, grace_s: float | None = None) -> RoundRecord:
    """Stop a round's process (SIGTERM, then SIGKILL after the grace period) and mark it cancelled."""
    row = _get_row(store, round_id)
    if row.status in FINAL_STATUSES:
        raise RoundError(f"Round {round_id} is already {row.status}.")
    if grace_s is None:
        settings = load_round_settings(Path(row.folder)) if row.folder else None
        grace_s = settings.rounds.cancel_grace_s if settings else 10.0
    from storage.rounds import get_round, update_round

    with store.transaction() as con:  # the round's own ingest may have committed since the read above
        finished = get_round(con, round_id).status
        if finished not in FINAL_STATUSES:
            update_round(con, round_id, status="cancelled", error="Cancelled by the user.",
                         finished_at=datetime.now(UTC).replace(tzinfo=None))
    if finished in FINAL_STATUSES:
        raise RoundError(f"Round {round_id} is already {finished}: it finished before it could be cancelled.")
    pid = row.pid
    if pid and pid != os.getpid() and pid_alive(pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        if pid_alive(pid):
            log.warning("Round %s (pid %d) ignored SIGTERM; sending SIGKILL", round_id, pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(50):
                if not pid_alive(pid):
                    break
                time.sleep(0.1)
    return _get_row(store, round_id)


class LaunchedRound(NamedTuple):
    """A round started in the background: its id, its process, and the usable labels it found at its start."""

    round_id: str
    pid: int
    usable_labels: int


def launch_round(settings: Settings, *, round_id: str | None = None, resume: bool = False,
                 extra_env: Mapping[str, str] | None = None, store: Store | None = None,
                 stop_after: str | None = None) -> LaunchedRound:
    """Start a round (or resume one) as a detached background process.

    The checks and the round's 'running' row happen HERE, before the process starts: the page or command
    that launched it sees it running at once (the child needs seconds to import its libraries), and a
    second click meets "one round at a time" instead of starting a second process. The child only runs
    the stages (``round execute``). The settings are written to the round folder and the child reads
    them from there, so the round runs with exactly what the caller had (in-process overrides included).
    Output goes to ``round.log``. ``stop_after`` is checked here too, before anything starts.
    """
    from rlhf.runtime import open_store, spawn_detached

    _check_stage_name(stop_after)
    store = store or open_store(settings)
    if resume:
        if round_id is None:
            raise RoundError("Name the round to resume.")
        _check_not_past(store, round_id, stop_after)
        prepare_resume(store, round_id)
    else:
        round_id = create_round(store, settings, round_id).round_id
    row = _get_row(store, round_id)
    folder = Path(row.folder or round_folder(settings, round_id))
    args = ["-c", "from rlhf.cli.rounds import main; main()", "execute", round_id,
            "--data-dir", str(Path(settings.data_dir).resolve()), "--no-progress",
            *(["--stop-after", stop_after] if stop_after else [])]
    try:
        pid = spawn_detached(args, RoundPaths(folder).log, extra_env)
    except OSError as exc:
        _update_row(store, round_id, status="failed", error=f"The round's process could not start: {exc}",
                    finished_at=datetime.now(UTC).replace(tzinfo=None))
        raise RoundError(f"Round {round_id} could not start its process: {exc}") from exc
    _update_row(store, round_id, pid=pid)
    log.info("Round %s launched in the background (pid %d)", round_id, pid)
    return LaunchedRound(round_id, pid, int((row.metrics or {}).get("usable_labels") or 0))


