"""Each page and role with Streamlit's AppTest (no browser), plus the exports behind the Data page."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from seed import EVIL_TITLE, PASSWORD, seed_store
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
HOME = str(ROOT / "annotate_app" / "Home.py")
USERS = {"ann": "annotator", "eng": "engineer", "mgr": "manager", "boss": "admin"}


@pytest.fixture(scope="module")
def template_store(tmp_path_factory):
    """Seed once per module (argon2 hashing is deliberately slow); each test gets a copy of the file."""
    from storage import Store

    path = tmp_path_factory.mktemp("template") / "recfeedback.duckdb"
    seeded = seed_store(Store(path), n_pairs=6, evil_title=True, users=USERS)
    return path, seeded


@pytest.fixture
def app_env(tmp_path, monkeypatch, template_store):
    """A seeded store that the app's settings point at; caches reset around the test."""
    import shutil

    import streamlit as st

    from rlhf.settings import get_settings
    from storage import Store

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(template_store[0], data / "recfeedback.duckdb")
    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(data))
    monkeypatch.setenv("RECFEEDBACK_QUEUE__GOLD_RATE", "0")
    monkeypatch.setenv("RECFEEDBACK_QUEUE__RESHOW_RATE", "0")
    get_settings.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()
    store = Store(data / "recfeedback.duckdb")
    yield store, template_store[1]
    get_settings.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()


def as_user(store, name: str, page: str | None = None) -> AppTest:
    from storage.users import get_annotator

    with store.transaction() as con:
        user = get_annotator(con, name)
    at = AppTest.from_file(HOME, default_timeout=60)
    at.session_state["auth.user"] = user
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for e in at.error] + [e.value for e in at.warning] + [e.value for e in at.success]
    parts += [e.value for e in at.info] + [m.value for m in at.markdown]
    return "\n".join(str(p) for p in parts)


def query(store, sql, params=None):
    with store.transaction() as con:
        return con.execute(sql, params or []).fetchall()


# ---------------------------------------------------------------- log-in


def test_login_form_refuses_bad_password_and_accepts_good(app_env):
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    at.text_input(key="login_user").input("ann")
    at.text_input(key="login_password").input("wrong-password")
    at.button[0].click().run()
    assert "wrong password" in texts(at)
    assert "auth.user" not in at.session_state
    at.text_input(key="login_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.session_state["auth.user"].annotator_id == "ann"
    assert any(r.key == "label_choice" for r in at.radio)  # landed on the Label page


def test_a_store_nobody_can_log_in_to_says_how_to_make_the_first_admin(app_env):
    """`recfeedback init` makes no account: the log-in page says how to create one instead of a bare form."""
    from rlhf import auth

    store, _ = app_env
    assert NO_ACCOUNTS_HINT not in texts(AppTest.from_file(HOME, default_timeout=60).run())  # seeded: accounts
    query(store, "UPDATE annotators SET active = false WHERE password_hash IS NOT NULL")
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception, at.exception
    assert auth.NO_ACCOUNTS in texts(at) and NO_ACCOUNTS_HINT in auth.NO_ACCOUNTS
    assert [t.label for t in at.text_input] == ["User name", "Password"]  # the form stays for the first admin


NO_ACCOUNTS_HINT = "recfeedback users add NAME --role admin"


def test_invalid_settings_stop_the_app_with_a_sentence_that_names_them(app_env, monkeypatch):
    from rlhf.settings import get_settings

    monkeypatch.setenv("RECFEEDBACK_QUEUE__OVERLAP_TARGET", "three")
    get_settings.cache_clear()
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception, at.exception
    assert not at.text_input  # no log-in form on settings the app cannot trust
    assert "queue.overlap_target" in texts(at) and "RECFEEDBACK_QUEUE__OVERLAP_TARGET" in texts(at)


def test_deactivated_user_is_logged_out_on_next_run(app_env):
    from rlhf import auth

    store, _ = app_env
    at = as_user(store, "ann")
    auth.update_account(store, "ann", by="boss", active=False)
    at.run()
    assert "auth.user" not in at.session_state
    login_form = [t.label for t in at.text_input] == ["User name", "Password"]
    assert login_form or any("log in" in w.value for w in at.warning)
    assert not any(r.key == "label_choice" for r in at.radio)


# ---------------------------------------------------------------- role checks on every page


@pytest.mark.parametrize(
    ("user", "page", "allowed"),
    [
        ("ann", "views/users.py", False), ("ann", "views/data.py", False), ("ann", "views/label.py", True),
        ("eng", "views/users.py", False), ("eng", "views/data.py", True),
        ("mgr", "views/users.py", False), ("mgr", "views/data.py", True),
        ("boss", "views/users.py", True), ("boss", "views/data.py", True), ("boss", "views/label.py", True),
    ],
)
def test_each_page_checks_the_role(app_env, user, page, allowed):
    store, _ = app_env
    at = as_user(store, user, page)
    refused = any("Access denied" in e.value for e in at.error)
    assert refused is (not allowed)
    if not allowed:
        # Nothing of the page itself was rendered after the refusal.
        assert not at.title or all(t.value != "Users" for t in at.title)
        assert not at.get("download_button")


def test_page_file_refuses_even_when_run_directly(app_env):
    """The page's own check does not depend on the router (an annotator loading the file by URL)."""
    store, _ = app_env
    from storage.users import get_annotator

    with store.transaction() as con:
        user = get_annotator(con, "ann")
    for page in ("users.py", "data.py"):
        at = AppTest.from_file(str(ROOT / "annotate_app" / "views" / page), default_timeout=60)
        at.session_state["auth.user"] = user
        at.run()
        assert any("Access denied" in e.value for e in at.error), page
    anonymous = AppTest.from_file(str(ROOT / "annotate_app" / "views" / "users.py"), default_timeout=60).run()
    assert any("log in" in w.value for w in anonymous.warning)


def test_registry_hides_forbidden_pages_and_skips_missing_files(monkeypatch):
    from annotate_app import navigation as nav

    assert [p.key for p in nav.pages_for("annotator")] == ["label"]
    assert {p.key for p in nav.pages_for("admin")} >= {"label", "users", "data"}
    missing = nav.PageEntry("ghost", "views/does_not_exist.py", "Ghost", ":material/help:")
    monkeypatch.setattr(nav, "REGISTRY", (*nav.REGISTRY, missing))
    assert "ghost" not in {p.key for p in nav.available_pages()}


def test_no_folder_is_served_as_legacy_pages_around_the_login():
    # Streamlit serves annotate_app/pages/*.py by itself, with its own menu, whenever a URL names one
    # of them: the log-in router would be skipped (tests/test_browser_label.py shows it in a browser).
    from annotate_app import navigation as nav

    assert not (nav.APP_DIR / "pages").exists()
    assert all(not p.file.startswith("pages/") for p in nav.REGISTRY)


# ---------------------------------------------------------------- the Label page


def test_label_page_renders_untrusted_text_escaped_and_submits(app_env):
    store, _ = app_env
    at = as_user(store, "ann")
    bodies = "\n".join(h.proto.body for h in at.get("html"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt; **bold** Mug" in bodies
    assert "<script>alert" not in bodies
    assert "&lt;i&gt;history&lt;/i&gt;" in bodies  # model reasons too
    assert "not a candidate" in bodies  # parser problems as badges
    assert EVIL_TITLE not in "\n".join(m.value for m in at.markdown)
    task = at.session_state["label.task"]

    # Flag an item, choose B "much better", write a rationale, submit.
    flag_key = f"label_flags_{task.assignment_id}_right_1"
    at.button_group(key=flag_key).set_value(["bad reason"])
    at.radio(key="label_choice").set_value("B")
    at.radio(key="label_strength").set_value("much better")
    at.text_area(key="label_rationale").input("B fits the history")
    at.button(key="label_submit").click().run()
    assert not at.exception, at.exception
    (choice, strength, left_side, flags, rationale, time_ms), = query(
        store, "SELECT choice, strength, left_side, CAST(item_flags AS VARCHAR), rationale, time_ms FROM labels")
    right_side = "B" if left_side == "A" else "A"
    assert choice == right_side and strength == 3 and rationale == "B fits the history"
    assert json.loads(flags) == {f"{right_side}:{task.right.items[0].item_id}": ["bad_reason"]}
    assert time_ms >= 0
    nxt = at.session_state["label.task"]
    assert nxt.assignment_id != task.assignment_id
    assert at.radio(key="label_choice").value is None  # answer cleared for the next pair

    # Undo brings the same pair back and writes a retraction; the answer comes back to be corrected.
    at.button(key="label_undo").click().run()
    assert not at.exception, at.exception
    back = at.session_state["label.task"]
    assert back.pair_id == task.pair_id
    assert len(query(store, "SELECT * FROM label_retractions")) == 1
    assert at.radio(key="label_choice").value == "B" and at.radio(key="label_strength").value == "much better"
    assert at.text_area(key="label_rationale").value == "B fits the history"
    assert at.button_group(key=f"label_flags_{back.assignment_id}_right_1").value == ["bad reason"]
    assert any("its answer is back" in i.value for i in at.info)


def test_label_page_requires_a_choice_and_can_skip(app_env):
    store, _ = app_env
    at = as_user(store, "ann")
    first = at.session_state["label.task"]
    at.button(key="label_submit").click().run()
    assert any("Choose A, B" in w.value for w in at.warning)
    assert query(store, "SELECT count(*) FROM labels")[0][0] == 0
    # Skip asks for a reason: none is chosen for the annotator, and a skip without one is refused.
    reason = at.selectbox(key=f"label_skip_reason_{first.assignment_id}")
    assert reason.value is None
    at.button(key="label_skip").click().run()
    assert any("Say why you skip" in w.value for w in at.warning)
    assert at.session_state["label.task"].pair_id == first.pair_id
    at.selectbox(key=f"label_skip_reason_{first.assignment_id}").set_value("context unclear")
    at.text_input(key=f"label_skip_note_{first.assignment_id}").input("the history is empty")
    at.button(key="label_skip").click().run()
    nxt = at.session_state["label.task"]
    assert nxt.pair_id != first.pair_id
    assert query(store, "SELECT skip_reason FROM assignments WHERE status = 'skipped'") == [
        ("context unclear: the history is empty",)]
    # The next pair's skip panel starts empty: the last reason and note are not reused by mistake.
    assert at.selectbox(key=f"label_skip_reason_{nxt.assignment_id}").value is None
    assert at.text_input(key=f"label_skip_note_{nxt.assignment_id}").value == ""


def _position(node, label: str, path: tuple[int, ...] = ()) -> tuple[int, ...] | None:
    """Where the expander called ``label`` sits in the element tree (child indices from the main block)."""
    if getattr(node, "type", None) == "expander" and getattr(node, "label", None) == label:
        return path
    for index, child in getattr(node, "children", {}).items():
        found = _position(child, label, (*path, index))
        if found is not None:
            return found
    return None


def test_a_one_shot_message_or_cookie_leaves_the_page_where_it_was(app_env):
    # Streamlit remounts an element whose position changes, so a message or the cookie script shown in one
    # run and gone in the next would close every open panel below it at the next click.
    store, _ = app_env
    at = as_user(store, "ann")
    at.session_state["label.notice"] = ("info", "Skipped.")
    at.session_state["auth.new_cookie"] = "a-token"
    at.run()
    assert any(i.value == "Skipped." for i in at.info)
    with_them = _position(at.main, "Skip this pair")
    at.run()
    assert not any(i.value == "Skipped." for i in at.info)
    assert with_them is not None and _position(at.main, "Skip this pair") == with_them
    # The undo button, shown for a while after a label, comes and goes the same way.
    at.radio(key="label_choice").set_value(at.radio(key="label_choice").options[0])
    at.button(key="label_submit").click().run()
    assert at.button(key="label_undo") is not None
    with_undo = _position(at.main, "Skip this pair")
    label_id, _ = at.session_state["label.last"]
    at.session_state["label.last"] = (label_id, 0.0)  # long ago: the undo window has passed
    at.run()
    assert not [b for b in at.button if b.key == "label_undo"]
    assert _position(at.main, "Skip this pair") == with_undo == with_them


def test_label_page_says_when_only_the_reasons_differ(app_env):
    store, _ = app_env
    seed_store(store, n_pairs=1, prefix="same", priorities=[100.0], problems=False, same_items_pairs=1)
    at = as_user(store, "ann")
    assert at.session_state["label.task"].pair_id == "samepair00000"
    assert any("only the reasons differ" in i.value for i in at.info)
    at.radio(key="label_choice").set_value(at.radio(key="label_choice").options[0])
    at.button(key="label_submit").click().run()
    assert at.session_state["label.task"].pair_id != "samepair00000"
    assert not any("only the reasons differ" in i.value for i in at.info)


def test_label_page_shows_guidelines_and_progress(app_env):
    from rlhf import annotation as ann

    store, _ = app_env
    ann.set_guidelines(store, "Prefer **variety**.", updated_by="boss")
    at = as_user(store, "ann")
    assert any("Prefer **variety**." in m.value for m in at.sidebar.markdown)
    metrics = {m.label: m.value for m in at.sidebar.metric}
    assert metrics == {"Today": "0", "Total": "0", "Left": "6"}


def _fill_every_pair(store, seeded) -> None:
    """Three other annotators label every seeded pair, so none is left for anyone else."""
    from rlhf import annotation as ann

    for _pair in seeded.pair_ids:
        for who in ("x1", "x2", "x3"):
            t = ann.next_task(store, who)
            ann.submit_label(store, who, t.assignment_id, "tie")


def test_label_page_says_when_nothing_is_left(app_env):
    store, seeded = app_env
    _fill_every_pair(store, seeded)
    at = as_user(store, "ann")
    assert any("Nothing left" in s.value for s in at.success)
    assert "no open pairs for anyone" not in texts(at)  # an annotator cannot fill the queue: no hint
    at = as_user(store, "eng")  # an engineer can, and is told how
    assert any("Nothing left" in s.value for s in at.success) and "no open pairs for anyone" in texts(at)


def test_label_page_shows_the_first_pairs_job_instead_of_an_empty_queue(app_env):
    import os

    from rlhf import bootstrap
    from rlhf.settings import get_settings

    store, seeded = app_env
    _fill_every_pair(store, seeded)
    settings = get_settings()
    running = bootstrap.BootstrapStatus(state="running", contexts_done=2, contexts_total=8, pairs=2,
                                        pid=os.getpid(), message="Writing lists for contexts 3-4")
    bootstrap.write_status(settings, running)
    at = as_user(store, "ann")
    assert any("writing the first pairs" in i.value for i in at.info), texts(at)
    assert not any("Nothing left" in s.value for s in at.success)
    assert "2 of 8 shoppers done" in at.get("progress")[0].proto.text
    failed = bootstrap.BootstrapStatus(state="failed", contexts_total=8, message="OSError: no model file")
    bootstrap.write_status(settings, failed)
    at = as_user(store, "ann")
    assert any("could not write the first pairs" in w.value for w in at.warning), texts(at)
    assert "OSError" not in texts(at)  # the detail goes to the log, not to the annotator


# ---------------------------------------------------------------- Users (admin) and Data pages


def test_admin_creates_changes_and_deactivates_users_and_edits_guidelines(app_env):
    from rlhf import annotation as ann
    from rlhf import auth

    store, _ = app_env
    at = as_user(store, "boss", "views/users.py")
    at.text_input(key="users_new_name_0").input("newbie")
    at.selectbox(key="users_new_role_0").set_value("annotator")
    at.text_input(key="users_new_password_0").input("short")
    next(b for b in at.button if b.label == "Create account").click().run()
    assert "at least 8 characters" in texts(at)
    assert at.text_input(key="users_new_name_0").value == "newbie"  # kept to be corrected, not wiped
    at.text_input(key="users_new_password_0").input("a-long-password")
    next(b for b in at.button if b.label == "Create account").click().run()
    assert not at.exception, at.exception
    assert auth.authenticate(store, "newbie", "a-long-password").role == "annotator"
    assert "Created newbie (annotator)." in texts(at) and at.text_input(key="users_new_name_1").value == ""
    assert "newbie" in at.dataframe[0].value["user"].tolist()

    at.selectbox(key="users_edit_target").set_value("newbie").run()
    assert at.selectbox(key="users_edit_role_newbie_0").value == "annotator"
    at.selectbox(key="users_edit_role_newbie_0").set_value("manager")
    at.checkbox(key="users_edit_active_newbie_0").uncheck()
    at.text_input(key="users_edit_password_newbie_0").input("another-password")
    next(b for b in at.button if b.label == "Save changes").click().run()
    assert not at.exception, at.exception
    user = next(u for u in auth.list_users(store) if u.annotator_id == "newbie")
    assert (user.role, user.active) == ("manager", False)
    with pytest.raises(auth.AuthError):
        auth.authenticate(store, "newbie", "another-password")  # inactive
    # The table shows the save at once (it showed the state before it), and the password does not linger.
    assert "Saved newbie." in texts(at) and at.text_input(key="users_edit_password_newbie_1").value == ""
    shown = at.dataframe[0].value.set_index("user").loc["newbie"]
    assert (shown["role"], shown["active"]) == ("manager", False)

    at.text_area(key="users_guidelines_body").input("New rules")
    next(b for b in at.button if b.label == "Save guidelines").click().run()
    assert ann.get_guidelines(store) == "New rules"


def test_the_users_page_shows_whose_labels_are_excluded(app_env):
    from rlhf import annotation as ann
    from rlhf.exclusion import exclude_annotator

    store, _ = app_env
    task = ann.next_task(store, "ann")
    ann.submit_label(store, "ann", task.assignment_id, "left", strength=1)
    exclude_annotator(store, "ann", by="mgr")
    at = as_user(store, "boss", "views/users.py")
    table = at.dataframe[0].value.set_index("user")
    assert table.loc["ann", "excluded labels"] == 1 and not table.loc["ann", "active"]
    assert table.loc["eng", "excluded labels"] == 0
    assert any("a manager excluded them" in c.value for c in at.caption)


def test_a_form_that_shows_an_account_as_it_was_does_not_undo_a_change_made_since(app_env):
    """Tab A showed ann2 deactivated; tab B reactivated her; a password reset in tab A switched her off again."""
    from rlhf import auth

    store, _ = app_env
    auth.update_account(store, "ann", by="boss", active=False)
    at = as_user(store, "boss", "views/users.py")
    at.selectbox(key="users_edit_target").set_value("ann").run()
    assert not at.checkbox(key="users_edit_active_ann_0").value
    auth.update_account(store, "ann", by="boss2", active=True)  # another window, meanwhile
    at.text_input(key="users_edit_password_ann_0").input("a-new-password")
    next(b for b in at.button if b.label == "Save changes").click().run()
    assert not at.exception, at.exception
    assert "ann was changed meanwhile: it is now active, role annotator. Nothing was saved" in texts(at)
    assert next(u for u in auth.list_users(store) if u.annotator_id == "ann").active
    assert at.checkbox(key="users_edit_active_ann_1").value  # the form shows it as it is now
    at.text_input(key="users_edit_password_ann_1").input("a-new-password")  # typed again, on the fresh form
    next(b for b in at.button if b.label == "Save changes").click().run()
    assert auth.authenticate(store, "ann", "a-new-password").active


def test_admin_cannot_demote_themselves(app_env):
    from rlhf import auth

    store, _ = app_env
    at = as_user(store, "boss", "views/users.py")
    at.selectbox(key="users_edit_target").set_value("boss").run()
    at.selectbox(key="users_edit_role_boss_0").set_value("annotator")
    next(b for b in at.button if b.label == "Save changes").click().run()
    assert any("cannot remove your own admin role" in e.value for e in at.error)
    assert next(u for u in auth.list_users(store) if u.annotator_id == "boss").role == "admin"


def test_a_refused_password_saves_no_part_of_the_change(app_env):
    """The page saved the new role and then refused the short password: half an edit."""
    from rlhf import auth

    store, _ = app_env
    at = as_user(store, "boss", "views/users.py")
    at.selectbox(key="users_edit_target").set_value("ann").run()
    at.selectbox(key="users_edit_role_ann_0").set_value("engineer")
    at.text_input(key="users_edit_password_ann_0").input("abc")
    next(b for b in at.button if b.label == "Save changes").click().run()
    assert any("at least 8 characters" in e.value for e in at.error)
    assert next(u for u in auth.list_users(store) if u.annotator_id == "ann").role == "annotator"


def test_data_page_import_speaks_of_the_mapping_box_and_names_the_upload(app_env):
    """The page's messages spoke of the CLI's --map and showed the upload's temporary path."""
    store, _ = app_env
    at = as_user(store, "eng", "views/data.py")
    at.file_uploader(key="data_upload").upload("shop items.csv", b"id,name\n1,Mug\n", "text/csv")
    at.run()
    next(b for b in at.button if b.label == "Import").click().run()
    shown = texts(at) + "\n".join(t.value for t in at.text)
    assert "map one in the Column mapping box, e.g. item_id=YOUR_COLUMN" in shown and "--map" not in shown
    at.text_input(key="data_mapping").input("title").run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert "Column mapping 'title' should look like OUR_COLUMN=FILE_COLUMN" in texts(at)
    at.text_input(key="data_mapping").input("item_id=id, title=name").run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert [s.value for s in at.success][-1].startswith("Imported 1 catalogue row from shop items.csv in ")
    at.file_uploader(key="data_upload").upload("fake.parquet", b"not parquet").run()
    next(b for b in at.button if b.label == "Import").click().run()
    err = texts(at)
    assert "fake.parquet is not a readable Parquet file" in err and "/tmp" not in err


def test_data_page_offers_every_export(app_env):
    store, _ = app_env
    at = as_user(store, "eng", "views/data.py")
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Labels as Parquet", "Labels as CSV", "Labels as TRL JSONL"]
    assert {m.label for m in at.metric} >= {"Open pairs", "Labels"}


# ---------------------------------------------------------------- exports


def _label_some(store):
    from rlhf import annotation as ann

    choices = ["left", "right", "tie", "both_bad", "left"]
    for i, who in enumerate(["a1", "a2", "a3", "a4", "a5"]):
        t = ann.next_task(store, who)
        ann.submit_label(store, who, t.assignment_id, choices[i], strength=(i % 3) + 1)
    # one undone label must not be exported
    t = ann.next_task(store, "a6")
    ann.submit_label(store, "a6", t.assignment_id, "left", strength=1)
    ann.undo_last_label(store, "a6")


def test_a_manager_excludes_an_annotator_on_the_agreement_page_and_restores_them(app_env):
    from rlhf.exclusion import excluded_annotators

    store, _ = app_env
    _label_some(store)
    at = as_user(store, "mgr", "views/agreement.py")
    at.selectbox(key="agreement.drill").select("a1").run()
    assert at.button(key="agreement.exclude").disabled  # until the manager confirms
    at.checkbox(key="agreement.exclude_sure.a1").check().run()
    at.button(key="agreement.exclude").click().run()
    assert not at.exception, at.exception
    assert "Excluded 1 label of a1" in texts(at) and excluded_annotators(store)["a1"].labels == 1
    shown = next(d.value for d in at.dataframe if "excluded by" in d.value.columns)  # who excluded whom
    assert shown[["annotator", "excluded labels", "excluded by"]].values.tolist() == [["a1", 1, "mgr"]]
    assert "a1" not in at.selectbox(key="agreement.drill").options  # its labels no longer count
    at.button(key="agreement.restore").click().run()
    assert "1 label of a1 count again" in texts(at) and excluded_annotators(store) == {}


def test_a_manager_reviews_a_pair_and_makes_it_gold_on_the_agreement_page(app_env):
    from rlhf.gold import gold_pairs

    store, seeded = app_env
    _label_some(store)
    at = as_user(store, "mgr", "views/agreement.py")
    assert "No gold pairs yet" in texts(at)
    assert "with two or more labels (fewer than 20, quality.min_pairs_for_agreement)" in texts(at)  # few labels
    at.text_input(key="agreement.gold.pair").input("pair_nope").run()
    assert "No pair with id 'pair_nope'" in texts(at) and not at.exception
    pair_id = seeded.pair_ids[0]
    at.text_input(key="agreement.gold.pair").input(pair_id).run()
    assert "**List A**" in texts(at) and "**List B**" in texts(at)
    assert at.radio(key=f"agreement.gold.answer.{pair_id}").value is None  # no answer chosen for the manager
    at.button(key=f"agreement.gold.save.{pair_id}").click().run()
    assert "Choose the gold answer first." in texts(at) and gold_pairs(store) == []
    at.radio(key=f"agreement.gold.answer.{pair_id}").set_value("B")
    at.text_input(key=f"agreement.gold.note.{pair_id}").input("A lists an item twice")
    at.button(key=f"agreement.gold.save.{pair_id}").click().run()
    assert not at.exception, at.exception
    assert f"Pair {pair_id} is gold, answer B is better." in texts(at)
    [gold] = gold_pairs(store)
    assert (gold.pair_id, gold.answer, gold.created_by, gold.note) == (pair_id, "B", "mgr", "A lists an item twice")
    shown = next(d.value for d in at.dataframe if "answer" in d.value.columns)  # the table includes it at once
    assert shown[["pair_id", "answer"]].values.tolist() == [[pair_id, "B is better"]]  # in the form's words
    # Reviewed again, it says it is gold and with which answer, and offers that answer, not A.
    assert "This pair is gold already: B is better, given by mgr (A lists an item twice)" in texts(at)
    assert at.radio(key=f"agreement.gold.answer.{pair_id}").value == "B"


def test_exports_parquet_and_trl(app_env, tmp_path):
    from rlhf import export

    store, _ = app_env
    _label_some(store)
    summary = export.export_labels(store, tmp_path / "labels.parquet", fmt="parquet")
    frame = pd.read_parquet(tmp_path / "labels.parquet")
    assert summary.rows == len(frame) == 5
    assert {"label_id", "pair_id", "annotator_id", "choice", "strength", "left_side", "gen_a", "gen_b",
            "policy_a", "is_gold"} <= set(frame.columns)

    out = tmp_path / "trl.jsonl"
    summary = export.export_labels(store, out, fmt="trl")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.rows == len(records) == 3  # ties and both-bad dropped
    with store.transaction() as con:
        texts_by_gen = dict(con.execute("SELECT generation_id, raw_text FROM generations").fetchall())
        labels = con.execute(
            "SELECT l.choice, l.strength, p.gen_a, p.gen_b FROM labels l JOIN pairs p USING (pair_id) "
            "WHERE l.choice IN ('A','B') AND l.label_id NOT IN (SELECT label_id FROM label_retractions) "
            "ORDER BY l.created_at, l.label_id").fetchall()
    from rlhf.settings import get_settings

    margins = get_settings().reward_model.margin_by_strength
    for rec, (choice, strength, gen_a, gen_b) in zip(records, labels):
        assert set(rec) == {"prompt", "chosen", "rejected", "margin", "strength"}
        assert rec["prompt"][0]["role"] == "system" and rec["prompt"][1]["role"] == "user"
        winner, loser = (gen_a, gen_b) if choice == "A" else (gen_b, gen_a)
        assert rec["chosen"] == [{"role": "assistant", "content": texts_by_gen[winner]}]
        assert rec["rejected"] == [{"role": "assistant", "content": texts_by_gen[loser]}]
        # The margin RecFeedback's own reward model trains with (it was the raw strength, 3x larger).
        assert rec["strength"] == strength and rec["margin"] == margins[strength - 1] != strength
    text_style = export.trl_records(store, style="text", with_ids=True)
    assert isinstance(text_style[0]["prompt"], str) and "label_id" in text_style[0]

    # A held-out shopper's labels: Parquet says so; TRL leaves them out unless asked, as the product's own
    # reward model does (those shoppers are for evaluation).
    with store.transaction() as con:
        context = con.execute(
            "SELECT p.context_id FROM labels l JOIN pairs p USING (pair_id) WHERE l.choice IN ('A','B') "
            "AND l.label_id NOT IN (SELECT label_id FROM label_retractions) ORDER BY l.created_at LIMIT 1").fetchone()[0]
        con.execute("UPDATE contexts SET split = 'heldout' WHERE context_id = ?", [context])
    on_it = sum(1 for rec in export.trl_records(store, with_ids=True, include_heldout=True)
                if rec["pair_id"] in set(frame.loc[frame["context_id"] == context, "pair_id"]))
    summary = export.export_labels(store, out, fmt="trl")
    assert 0 < on_it and summary.rows == 3 - on_it and summary.heldout_left_out == on_it
    assert f"Left out {on_it} label" in summary.sentence()
    assert len(export.trl_records(store, include_heldout=True)) == 3
    export.export_labels(store, tmp_path / "labels.parquet", fmt="parquet")
    frame = pd.read_parquet(tmp_path / "labels.parquet")
    assert set(frame.loc[frame["context_id"] == context, "context_split"]) == {"heldout"}
    assert "heldout" not in set(frame.loc[frame["context_id"] != context, "context_split"])


def test_export_cli(app_env, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli import app

    store, _ = app_env
    _label_some(store)
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--format", "trl", "--out", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 0, result.output
    assert "3 rows" in result.output and "Left out" not in result.output
    with store.transaction() as con:  # every context held out: the default leaves all out, the flag keeps them
        con.execute("UPDATE contexts SET split = 'heldout'")
    result = runner.invoke(app, ["export", "--format", "trl", "--out", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 0 and "0 rows" in result.output and "Left out 3 labels" in result.output, result.output
    result = runner.invoke(app, ["export", "--format", "trl", "--out", str(tmp_path / "x.jsonl"), "--include-heldout"])
    assert result.exit_code == 0 and "3 rows" in result.output, result.output
    result = runner.invoke(app, ["export", "--format", "xlsx", "--out", str(tmp_path / "x.xlsx")])
    assert result.exit_code != 0
    # The format follows the file's name when --format is not given; a name that says nothing is refused.
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "all.parquet")])
    assert result.exit_code == 0 and len(pd.read_parquet(tmp_path / "all.parquet")) == 5, result.output  # ties too
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "y.jsonl"), "--include-heldout"])
    assert result.exit_code == 0 and len((tmp_path / "y.jsonl").read_text().splitlines()) == 3, result.output
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "labels.txt")])
    assert result.exit_code == 2 and "name the file .parquet, .csv or .jsonl" in result.output
    assert not (tmp_path / "labels.txt").exists()
    with store.transaction() as con:  # a rationale a spreadsheet would run as a formula
        con.execute("UPDATE labels SET rationale = '=HYPERLINK(\"http://evil.example\",\"x\")' "
                    "WHERE label_id = (SELECT min(label_id) FROM labels)")
    # A manager's spreadsheet: the Parquet table as CSV, the same rows, formulas defused.
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "labels.csv")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "labels.csv", encoding="utf-8-sig")
    pd.testing.assert_frame_equal(table[["label_id", "choice"]],
                                  pd.read_parquet(tmp_path / "all.parquet")[["label_id", "choice"]])
    assert '\'=HYPERLINK("http://evil.example","x")' in table["rationale"].tolist()
    # TRL-only options with the Parquet export are refused, not silently ignored.
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "z.parquet"), "--include-gold"])
    said = " ".join(result.output.replace("│", " ").split())  # the error box wraps its lines
    assert result.exit_code == 2 and "--include-gold applies only to the TRL export" in said
    assert "--format" not in said.split("--include-gold applies")[0]  # not blamed on an option not given
    assert not (tmp_path / "z.parquet").exists()
    # A format the name contradicts is refused: it wrote JSONL into a .parquet file, over a good one.
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "all.parquet"), "--format", "trl"])
    assert result.exit_code == 2 and "--format trl does not write .parquet files" in result.output
    assert len(pd.read_parquet(tmp_path / "all.parquet")) == 5  # the earlier export is untouched
    guide = tmp_path / "g.md"
    guide.write_text("# From a file\n")
    result = runner.invoke(app, ["guidelines", "set", str(guide)])
    assert result.exit_code == 0, result.output
    from rlhf import annotation as ann

    assert ann.get_guidelines(store) == "# From a file"
    guide.write_bytes("caf\u00e9 rules".encode("latin-1"))  # not UTF-8: a sentence, not a traceback
    result = runner.invoke(app, ["guidelines", "set", str(guide)])
    assert result.exit_code == 1 and "g.md is not UTF-8 text" in result.output, result.output
    assert ann.get_guidelines(store) == "# From a file"


def test_the_training_page_lets_simulated_annotators_label_a_store_too_small_for_a_round(app_env):
    # A fresh demo store has a dozen first pairs and no label; one person cannot give a round the labels it
    # needs, so an engineer who demos the loop in the browser lets the simulated crowd label the queue.
    store, _ = app_env
    at = as_user(store, "eng", "views/training.py")
    start = next(b for b in at.button if b.key == "training.start")
    assert start.disabled  # no usable label yet
    panel = next(e for e in at.expander if e.label.startswith("Simulated annotators"))
    assert panel.proto.expanded  # opened, since a round cannot start yet
    at.number_input(key="training.simulate_labels").set_value(7)
    at.button(key="training.simulate").click().run()
    assert not at.exception, at.exception
    rows = query(store, "SELECT a.kind, count(*) FROM labels l JOIN annotators a USING (annotator_id) "
                        "GROUP BY a.kind")
    assert rows == [("simulated", 7)]
    said = " ".join(s.value for s in at.success)
    assert said.startswith("7 labels by ") and "simulated annotators. The store has" in said


def test_every_new_pair_starts_from_the_same_answer_however_it_arrives(app_env):
    # A pair that appears after a run without the form (the queue was empty, the first pairs were still being
    # written) started on "slightly better" where every other starts on "clearly better".
    store, _ = app_env
    at = as_user(store, "ann")
    at.session_state["label.task"] = None  # nothing to label: the form is not drawn
    at.run()
    assert any("Nothing left to label" in s.value for s in at.success)
    del at.session_state["label.task"]  # "Check again", or the first pairs' poll: a pair is ready
    at.run()
    assert at.radio(key="label_strength").value == "clearly better" and at.radio(key="label_choice").value is None
    # A rationale over the limit is refused with a sentence, and kept for shortening: nothing is stored.
    at.radio(key="label_choice").set_value("A")
    at.text_area(key="label_rationale").input("x" * 1001)
    at.button(key="label_submit").click().run()
    assert any("Your rationale has 1,001 characters; shorten it to 1,000" in w.value for w in at.warning)
    assert query(store, "SELECT count(*) FROM labels")[0][0] == 0
    assert at.text_area(key="label_rationale").value == "x" * 1001


def test_a_problem_badge_is_red_and_the_product_line_hint_grey():
    # Red means the list is invalid; the hint leaves it valid, so it must not look like a problem.
    from annotate_app.ui import item_html
    from rlhf.annotation import COPIED_LINE_BADGE, ShownItem

    html = item_html(ShownItem(1, "I1", "Mug", "Kitchen", 3.5, "Mug (Kitchen, 3.50)",
                               badges=(COPIED_LINE_BADGE, "duplicate")))
    assert f'<span class="rf-note">{COPIED_LINE_BADGE}</span>' in html
    assert '<span class="rf-badge">duplicate</span>' in html
