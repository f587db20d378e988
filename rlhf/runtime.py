"""Process-wide access to the configured store (a cached resource)."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from rlhf.settings import Settings, get_settings
from storage import Store


def open_store(settings: Settings | None = None, *, create: bool = False) -> Store:
    """The store named by the settings, migrated to the latest schema on first use in this process.

    A folder without a store is refused (:class:`NoStoreError`), not given a new empty one: a mistyped data
    folder would read as "my rounds are gone". ``create``: for the commands that fill a new store (imports,
    accounts) as ``recfeedback init`` does.
    """
    from rlhf.errors import NoStoreError

    settings = settings or get_settings()
    if not create and not settings.store.db_path.exists():
        raise NoStoreError(f"There is no store at {settings.store.db_path}. Check RECFEEDBACK_STORE__DATA_DIR (or "
                           "[store] data_dir in recfeedback.toml), or make one there with `recfeedback init`.")
    return _open_store(
        str(settings.store.db_path.resolve()),
        settings.store.lock_timeout_s,
        settings.store.lock_retry_initial_ms,
        settings.store.lock_retry_max_ms,
    )


@lru_cache(maxsize=16)
def _open_store(path: str, timeout: float, retry_initial: float, retry_max: float) -> Store:
    return Store(Path(path), lock_timeout_s=timeout, retry_initial_ms=retry_initial, retry_max_ms=retry_max)


def jsonable(value: Any) -> Any:
    """``value`` ready for JSON: numpy scalars as Python numbers, tuples as lists, NaN and inf as None
    (JSON has neither, and a round's reports and markers must load back)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def logging_to(path: Path) -> Iterator[None]:
    """Log records to ``path`` too while the block runs, unless this process's stderr already is that file (a
    process that :func:`spawn_detached` started): so that a round run in a terminal leaves its log in its folder,
    as a background round does."""
    try:
        already = path.exists() and os.path.samestat(os.fstat(sys.stderr.fileno()), os.stat(path))
    except (OSError, ValueError, AttributeError):  # stderr is no file (a test's capture)
        already = False
    if already:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def setup_logging(level: int = logging.INFO, *, progress: bool = True) -> None:
    """Log to stderr with timestamps; called once by entry points, never by library code.

    ``progress=False`` (a command's ``--no-progress``, for logs) also silences the libraries' own bars, such
    as transformers' "Loading weights": they read ``HF_HUB_DISABLE_PROGRESS_BARS`` when first imported.
    """
    logging.basicConfig(level=level, format=LOG_FORMAT)
    if not progress:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"


def spawn_detached(args: Sequence[str], log_path: Path, extra_env: Mapping[str, str] | None = None) -> int:
    """Start ``python <args>`` in its own session (it outlives the app or CLI that started it); return its pid.

    Output goes to ``log_path`` (appended); hubs are off; this checkout is on PYTHONPATH so the child
    imports the same code as the parent. Used for background rounds and the first-pairs job.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           **(extra_env or {})}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as fh:
        proc = subprocess.Popen([sys.executable, *args], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env, cwd=os.getcwd())
    # Collect its exit status when it ends: unwaited, it would stay a zombie under a long-lived app.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid
