"""The round folder and its files, the stage names, and the settings a round runs with."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rlhf.errors import RoundError
from rlhf.settings import Settings, load_settings, with_values

UTC = timezone.utc  # datetime.UTC is Python 3.11+

#: The stages a round runs, in order.
STAGES: tuple[str, ...] = ("snapshot", "reward_model", "ppo", "generate", "select", "enqueue")
#: The statuses a round ends in. Before that it is "running", or "stopped" (after ``--stop-after``, until
#: resumed); "interrupted" is derived: running, but its process is gone.
FINAL_STATUSES = ("done", "failed", "cancelled")


class RoundCancelled(RoundError):
    """The round's process received SIGTERM (``round cancel``)."""




# ----------------------------------------------------------------------------------- folder and files
@dataclass(frozen=True)
class RoundPaths:
    """Where a round keeps its files."""

    folder: Path

    @property
    def settings(self) -> Path:
        return self.folder / "settings.json"

    @property
    def log(self) -> Path:
        return self.folder / "round.log"

    @property
    def progress(self) -> Path:
        return self.folder / "progress.json"

    @property
    def snapshot(self) -> Path:
        return self.folder / "snapshot"

    @property
    def stages(self) -> Path:
        return self.folder / "stages"

    @property
    def ppo(self) -> Path:
        return self.folder / "ppo"

    @property
    def adapter(self) -> Path:
        return self.ppo / "adapter"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.jsonl"

    @property
    def generations(self) -> Path:
        return self.folder / "generations.jsonl"

    @property
    def pairs(self) -> Path:
        return self.folder / "pairs.jsonl"

    @property
    def evaluation(self) -> Path:
        return self.folder / "evaluation.json"

    @property
    def ensemble(self) -> Path:
        return self.folder / "ensemble"

    def marker(self, stage: str) -> Path:
        return self.stages / f"{stage}.json"


def round_folder(settings: Settings, round_id: str) -> Path:
    """``<data_dir>/rounds/<round_id>``."""
    return Path(settings.data_dir) / "rounds" / round_id


def quick_settings(settings: Settings) -> Settings:
    """The settings of a QUICK round: ``settings.rounds.quick`` laid over the full values, section by section.

    For a demo or a smoke test on a CPU, where the full round (hundreds of PPO steps on every context)
    would take hours. Values are validated like any settings; an unknown section or key is an error.
    :func:`quick_overrides` says which of the engineer's own values this replaces.
    """
    return settings.model_copy(update={section: quick for section, (_, quick) in _quick_sections(settings).items()})


def quick_overrides(settings: Settings) -> list[str]:
    """One sentence per value the engineer set (in the file or the environment: not the default) that a quick
    round replaces with another, saying how to keep theirs; empty when nothing of theirs is lost."""
    said = []
    for section, (current, quick) in _quick_sections(settings).items():
        for key, value in quick.model_dump(include=set(settings.rounds.quick[section])).items():
            yours = getattr(current, key)
            if yours != type(current).model_fields[key].get_default(call_default_factory=True) and yours != value:
                said.append(f"A quick round replaces {section}.{key} = {yours!r} from your settings with {value!r}; "
                            f"to keep yours, set rounds.quick.{section}.{key} too.")
    return said


def _quick_sections(settings: Settings) -> dict[str, tuple[BaseModel, BaseModel]]:
    """Each section ``rounds.quick`` names: (its full value, its validated quick value). Loaded settings were
    checked already; settings built in code (``model_copy``) are checked here."""
    from rlhf.settings import quick_sections

    try:
        return quick_sections(settings)
    except ValueError as exc:
        raise RoundError(f"settings.{exc}.") from exc


#: A round id names a folder under ``rounds/`` and a policy (``policy_<id>``): letters, digits, ``_``, ``-``
#: and ``.``, starting with a letter or digit, so that it can neither leave that folder nor need quoting.
_ROUND_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")


def check_round_id(round_id: str) -> None:
    """Raise RoundError with a sentence when ``round_id`` cannot name a round (see :data:`_ROUND_ID`)."""
    if not _ROUND_ID.fullmatch(round_id) or ".." in round_id:
        raise RoundError(f"{round_id!r} cannot be a round id: use up to 80 letters, digits, '_', '-' and '.', "
                         "starting with a letter or digit (or leave the id out for a new one).")


def new_round_id() -> str:
    """A sortable, readable id: ``round_<UTC time>_<random>``."""
    import uuid

    return f"round_{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:6]}"


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _dig(data: Mapping[str, Any] | None, *keys: str) -> Any:
    cur: Any = data
    for key in keys:
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


def completed_stages(folder: Path) -> list[str]:
    """Stages with a completion marker, in stage order."""
    paths = RoundPaths(folder)
    return [s for s in STAGES if paths.marker(s).is_file()]


def read_progress(folder: Path) -> dict[str, Any]:
    """The live progress a running round writes (stage, step, total, updated_at); {} when none."""
    return _read_json(RoundPaths(folder).progress, {}) or {}


def log_tail(folder: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of the round's log (background rounds), as a terminal would show them: a
    progress bar redrawn with carriage returns (tqdm's, transformers' "Loading weights") is its last state,
    and blank lines are left out."""
    path = RoundPaths(folder).log
    if not path.is_file():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 64_000))
        text = fh.read().decode("utf-8", errors="replace")
    # Split on newlines only: str.splitlines would also split at each carriage return, one line per redraw.
    shown = []
    for line in text.split("\n"):
        drawn = [part for part in line.split("\r") if part.strip()]
        if drawn:
            shown.append(drawn[-1].rstrip())
    return "\n".join(shown[-lines:])


def save_round_settings(settings: Settings, folder: Path) -> None:
    """Record the settings a round runs with (also what a background process is started with)."""
    _write_json(RoundPaths(folder).settings, settings.to_toml_dict())


def load_round_settings(folder: Path, *, data_dir: Path | None = None) -> Settings:
    """The settings recorded in a round folder; with ``data_dir``, those of the store where the round runs now
    (the recorded folder is where it started, and the store may have moved since)."""
    data = _read_json(RoundPaths(folder).settings)
    if data is None:
        raise RoundError(f"{folder} has no readable settings.json; the round cannot be resumed.")
    settings = load_settings(**data)
    return with_values(settings, "store", data_dir=data_dir) if data_dir is not None else settings


