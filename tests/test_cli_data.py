"""The data commands through typer's CliRunner: init, imports, contexts build, users."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run ``recfeedback ...`` against a store in a temporary folder; returns (invoke, data_dir)."""
    from rlhf import runtime
    from rlhf.settings import get_settings

    data_dir = tmp_path / "data"
    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(data_dir))
    monkeypatch.chdir(tmp_path)  # no recfeedback.toml, no ../shared/data here
    get_settings.cache_clear()
    runtime._open_store.cache_clear()
    from rlhf.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), input=input)

    yield invoke, data_dir
    get_settings.cache_clear()
    runtime._open_store.cache_clear()


@pytest.mark.parametrize(
    "command",
    [
        ["init"],
        ["import-catalog"],
        ["import-interactions"],
        ["import-online-retail"],
        ["contexts", "build"],
        ["users", "add"],
        ["users", "list"],
    ],
)
def test_every_data_command_has_help(cli, command: list[str]) -> None:
    invoke, _ = cli
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_an_invalid_setting_is_one_sentence_naming_it_and_its_source(cli, tmp_path, monkeypatch) -> None:
    """A value that fails validation, from the environment or the settings file, stops every command
    (the app's launcher included) with the setting, the value and where it came from, not a traceback."""
    invoke, data_dir = cli
    monkeypatch.setenv("RECFEEDBACK_ROUNDS__PRIORITY_OFFSET", "0.5")
    for command in (["config", "show"], ["round", "list"], ["app", "--no-bootstrap"]):
        result = invoke(*command)
        assert result.exit_code == 1, (command, result.output)
        assert isinstance(result.exception, SystemExit), result.exception  # a clean exit, no traceback
        assert "rounds.priority_offset" in result.output and "RECFEEDBACK_ROUNDS__PRIORITY_OFFSET" in result.output
        assert "no recfeedback.toml here" in result.output
    monkeypatch.delenv("RECFEEDBACK_ROUNDS__PRIORITY_OFFSET")
    bad = tmp_path / "bad.toml"
    bad.write_text('[queue]\noverlap_target = "three"\n', encoding="utf-8")
    monkeypatch.setenv("RECFEEDBACK_CONFIG", str(bad))
    result = invoke("config", "show")
    assert result.exit_code == 1 and "queue.overlap_target" in result.output and str(bad) in result.output
    assert not data_dir.exists()  # nothing was created on settings that failed


@pytest.mark.parametrize(("variable", "value", "bound"), [
    ("RECFEEDBACK_PPO__STEPS", "-1", "greater than or equal to 0"),
    ("RECFEEDBACK_PPO__BATCH_SIZE", "0", "greater than or equal to 1"),
    ("RECFEEDBACK_PPO__TOP_P", "0", "greater than 0"),
    ("RECFEEDBACK_ROUNDS__NEW_PAIRS", "-5", "greater than or equal to 1"),
    ("RECFEEDBACK_QUEUE__GOLD_RATE", "1.5", "less than or equal to 1"),
    ("RECFEEDBACK_REWARD_MODEL__HELDOUT_FRACTION", "1", "less than 1"),
    ("RECFEEDBACK_GENERATION__LIST_LENGTH", "0", "greater than or equal to 1"),
])
def test_a_number_out_of_its_range_is_refused_when_settings_load(monkeypatch, variable, value, bound) -> None:
    """A negative step count or a share above one used to load, and failed (or did nothing) minutes into a
    round; now the settings say so before any command runs."""
    from rlhf.settings import ConfigError, load_settings

    monkeypatch.setenv(variable, value)
    name = variable.removeprefix("RECFEEDBACK_").lower().replace("__", ".")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert name in str(refused.value) and bound in str(refused.value) and variable in str(refused.value)


def test_app_on_a_port_in_use_says_so_before_it_starts_anything(cli, monkeypatch) -> None:
    """A second `make run` (or another service on the port): one sentence with what to do, and no first-pairs
    job started for an app that never comes up."""
    import socket

    invoke, data_dir = cli
    monkeypatch.setenv("RECFEEDBACK_DEMO__N_ITEMS", "120")
    monkeypatch.setenv("RECFEEDBACK_DEMO__N_SHOPPERS", "60")
    from rlhf.settings import get_settings

    get_settings.cache_clear()
    assert invoke("init", "--demo").exit_code == 0  # a store with contexts and no pairs: the app would start a job
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("localhost", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("app", "--port", str(port))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"Port {port} on localhost is in use" in result.output
    assert f"recfeedback app --port {port + 1}" in result.output
    assert sorted(p.name for p in data_dir.iterdir()) == ["recfeedback.duckdb"]  # no job, no log
    monkeypatch.setenv("RECFEEDBACK_APP__HOST", "192.0.2.1")  # TEST-NET-1: never an address of this machine
    get_settings.cache_clear()
    elsewhere = invoke("app", "--port", str(port))
    assert elsewhere.exit_code == 1 and "The app cannot listen on 192.0.2.1" in elsewhere.output, elsewhere.output
    assert "settings.app.host" in elsewhere.output and "in use" not in elsewhere.output


def test_app_on_a_store_without_accounts_says_how_to_make_one(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlhf.auth import NO_ACCOUNTS

    invoke, _ = cli
    started: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, cmd: started.append(cmd))
    assert invoke("init").exit_code == 0
    result = invoke("app", "--no-bootstrap")
    assert result.exit_code == 0 and NO_ACCOUNTS in result.output, result.output
    assert invoke("users", "add", "root", "--role", "admin", "--password", "a-long-password").exit_code == 0
    again = invoke("app", "--no-bootstrap")
    assert again.exit_code == 0 and NO_ACCOUNTS not in again.output, again.output
    assert len(started) == 2 and "streamlit" in started[0]  # the app started both times


def test_the_app_started_from_another_folder_keeps_the_projects_streamlit_settings(cli, monkeypatch, tmp_path):
    """Streamlit reads .streamlit/config.toml from the working directory only: started elsewhere, the app showed
    the deploy toolbar and full error details. A folder with its own file keeps it."""
    invoke, _ = cli
    started: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, cmd: started.append(cmd))
    assert invoke("init").exit_code == 0
    assert invoke("users", "add", "root", "--role", "admin", "--password", "a-long-password").exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / ".streamlit").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert invoke("app", "--no-bootstrap").exit_code == 0
    cmd = started[0]
    given = {name: cmd[cmd.index(name) + 1] for name in ("--client.toolbarMode", "--client.showErrorDetails",
                                                         "--server.fileWatcherType", "--server.headless")}
    assert given == {"--client.toolbarMode": "minimal", "--client.showErrorDetails": "type",
                     "--server.fileWatcherType": "none", "--server.headless": "true"}
    (elsewhere / ".streamlit" / "config.toml").write_text("[theme]\nbase = 'dark'\n")
    assert invoke("app", "--no-bootstrap").exit_code == 0
    assert "--client.toolbarMode" not in started[1]  # the folder's own file is Streamlit's to read


def test_users_exclude_and_restore_from_the_shell(cli) -> None:
    from seed import seed_store

    from rlhf import annotation as ann
    from storage import Store

    invoke, data_dir = cli
    assert invoke("init").exit_code == 0
    store = Store(data_dir / "recfeedback.duckdb")
    seed_store(store, n_pairs=2, overlap_target=1, users={"spam": "annotator"})
    for _ in range(2):
        task = ann.next_task(store, "spam")
        ann.submit_label(store, "spam", task.assignment_id, "left", strength=1)
    out = invoke("users", "exclude", "spam", "--by", "lead")
    assert out.exit_code == 0 and "Excluded 2 labels of spam" in out.output and "deactivated" in out.output
    listed = invoke("users", "list").output
    assert any(line.split()[:7] == ["spam", "annotator", "human", "no", "2", "(by", "lead,"]
               for line in listed.splitlines()), listed
    back = invoke("users", "restore", "spam", "--reactivate")
    assert back.exit_code == 0 and "2 labels of spam count again, and the account is active again" in back.output
    ghost = invoke("users", "exclude", "ghost")
    assert ghost.exit_code == 1 and "No annotator named 'ghost'" in ghost.output


def test_init_creates_the_store_and_demo_refuses_to_overwrite(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    invoke, data_dir = cli
    monkeypatch.setenv("RECFEEDBACK_DEMO__N_ITEMS", "120")
    monkeypatch.setenv("RECFEEDBACK_DEMO__N_SHOPPERS", "60")
    from rlhf.settings import get_settings

    get_settings.cache_clear()
    result = invoke("init")
    assert result.exit_code == 0 and "Store ready" in result.output
    assert (data_dir / "recfeedback.duckdb").exists()

    result = invoke("init", "--demo")  # an empty store may be filled
    assert result.exit_code == 0, result.output
    assert "120 items in 12 categories, 60 shoppers" in result.output
    assert "ann1       annotator  ann1-demo" in result.output and "admin-demo" in result.output

    result = invoke("init", "--demo")
    assert result.exit_code == 1
    assert "already holds data (120 catalog items" in result.output and "--force" in result.output
    assert "Traceback" not in result.output

    result = invoke("init", "--demo", "--keep-existing")  # a second `make run`
    assert result.exit_code == 0, result.output
    assert "Using the existing store" in result.output and not list(data_dir.glob("recfeedback.duckdb.bak-*"))

    result = invoke("init", "--demo", "--force")
    assert result.exit_code == 0, result.output
    assert "Moved the old store to" in result.output
    assert len(list(data_dir.glob("recfeedback.duckdb.bak-*"))) == 1

    result = invoke("users", "list")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()[1:]] == [
        "admin",
        "ann1",
        "ann2",
        "ann3",
        "engineer",
        "manager",
    ]


def test_imports_contexts_and_errors(cli) -> None:
    invoke, _ = cli
    result = invoke("import-catalog", str(FIXTURES / "catalog_bad.csv"))
    assert result.exit_code == 1
    assert "line 3: empty title" in result.output and "nothing was imported" in result.output

    result = invoke("import-catalog", str(FIXTURES / "catalog_good.csv"))
    assert result.exit_code == 0 and "Imported 4 catalogue rows" in result.output, result.output
    result = invoke(
        "import-catalog", str(FIXTURES / "catalog_mapped.csv"), "--map", "item_id=sku", "--map", "title=name"
    )
    assert result.exit_code == 0 and "Imported 2 catalogue rows" in result.output, result.output
    result = invoke("import-catalog", str(FIXTURES / "catalog_mapped.csv"), "--map", "title")
    assert result.exit_code == 1 and "OUR_COLUMN=FILE_COLUMN" in result.output

    result = invoke("import-interactions", str(FIXTURES / "interactions_bad.csv"))
    assert result.exit_code == 1 and "line 3: item 'NOPE' is not in the catalogue" in result.output
    result = invoke("import-interactions", str(FIXTURES / "interactions_good.csv"))
    assert result.exit_code == 0 and "Imported 5 interaction rows" in result.output, result.output

    result = invoke("import-catalog", str(FIXTURES / "catalog_latin1.csv"))
    assert result.exit_code == 1 and "is not UTF-8 text" in result.output

    result = invoke("contexts", "build", "--as-of", "2024-03-04", "--strategy", "popularity")
    assert result.exit_code == 0, result.output
    assert "Built 1 context " in result.output  # u1 has two items before the cut; u2 only one
    result = invoke("contexts", "build", "--as-of", "yesterday-ish")
    assert result.exit_code == 1 and "--as-of 'yesterday-ish' is not a date" in result.output
    result = invoke("contexts", "build", "--strategy", "magic")
    assert result.exit_code == 1 and "Unknown retrieval strategy" in result.output

    result = invoke("import-online-retail")
    assert result.exit_code == 1 and "pass the folder" in result.output


def test_users_add_and_list(cli) -> None:
    invoke, data_dir = cli
    # A folder without a store (a mistyped data folder) is refused in a sentence, not given a new, empty store
    # that would read as "every account is gone"; a command that fills a new store makes it, as init does.
    result = invoke("users", "list")
    assert result.exit_code == 1 and f"There is no store at {data_dir / 'recfeedback.duckdb'}" in result.output
    assert "RECFEEDBACK_STORE__DATA_DIR" in result.output and not (data_dir / "recfeedback.duckdb").exists()
    result = invoke("users", "add", "alice", "--role", "manager", "--password", "correct-horse",
                    "--name", "Alice Liddell")
    assert result.exit_code == 0 and "Created manager account 'alice'" in result.output
    result = invoke("users", "add", "bob", "--role", "annotator", input="secret-pass\nsecret-pass\n")
    assert result.exit_code == 0, result.output
    result = invoke("users", "add", "carol", "--role", "boss", "--password", "whatever-1")
    assert result.exit_code == 1 and "Unknown role 'boss'" in result.output
    result = invoke("users", "add", "alice", "--role", "admin", "--password", "another-one")
    assert result.exit_code == 1 and "already exists" in result.output
    result = invoke("users", "list")
    assert "alice" in result.output and "bob" in result.output and "carol" not in result.output
    alice = next(line for line in result.output.splitlines() if line.startswith("alice"))
    assert alice.split()[4:] == ["0", "Alice", "Liddell"]  # no label excluded; the name people see

    from rlhf.auth import authenticate
    from rlhf.runtime import open_store

    assert authenticate(open_store(), "bob", "secret-pass").role == "annotator"


def test_stopping_recfeedback_app_stops_the_server(cli, tmp_path) -> None:
    """A process manager stops `recfeedback app` with SIGTERM: the Streamlit server used to run on as an orphan,
    still holding the port."""
    import contextlib
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from browser_support import free_port

    invoke, data_dir = cli
    assert invoke("init").exit_code == 0
    assert invoke("users", "add", "root", "--role", "admin", "--password", "a-long-password").exit_code == 0
    port = free_port()
    env = {**os.environ, "RECFEEDBACK_STORE__DATA_DIR": str(data_dir), "RECFEEDBACK_APP__HOST": "127.0.0.1"}
    log = (tmp_path / "app.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-c", "from rlhf.cli import app; app()", "app", "--port", str(port),
                             "--no-bootstrap"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    try:
        deadline = time.monotonic() + 90
        while not healthy():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "app.log").read_text()
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)  # to the process we started, as systemd or supervisord would
        proc.wait(timeout=30)
        time.sleep(1)
        assert not healthy(), "the server outlived `recfeedback app`"
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left (an orphaned server before the fix)
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_builds_the_demo_where_the_settings_put_it_and_keeps_it_the_second_time(tmp_path: Path) -> None:
    """`make run`'s demo step, with the store set by an environment variable as the README shows it: the
    Makefile once looked for its own ./data and refused the second time."""
    data_dir = tmp_path / "elsewhere"
    env = {**os.environ, "RECFEEDBACK_STORE__DATA_DIR": str(data_dir), "RECFEEDBACK_DEMO__N_ITEMS": "60",
           "RECFEEDBACK_DEMO__N_SHOPPERS": "30"}
    first = subprocess.run(["make", "--no-print-directory", "demo"], check=False, cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Demo shop ready at " + str(data_dir) in first.stdout
    second = subprocess.run(["make", "--no-print-directory", "demo"], check=False, cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Using the existing store at " + str(data_dir) in second.stdout
