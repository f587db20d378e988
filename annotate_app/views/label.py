"""Label page: compare two recommendation lists for one shopper and say which is better.

Thin by design: layout and widgets; every queue change goes through :mod:`rlhf.annotation`.
Session state keys (prefix ``label.``): ``label.task`` (the current Task), ``label.shown_at`` (when it
was first shown, for time on task), ``label.last`` (label id and monotonic time of the last submit, for
the undo button), ``label.notice`` (a one-shot message). Untrusted text (catalogue titles, model
reasons) is rendered only through :func:`annotate_app.ui.esc` inside st.html: it shows as text.
"""

from __future__ import annotations

import logging
import time

import streamlit as st

from annotate_app import ui
from rlhf import annotation as ann
from rlhf import bootstrap as first_pairs
from rlhf.auth import can_open
from rlhf.wording import counted
from storage.errors import StoreError

log = logging.getLogger("recfeedback.app")
user = ui.require_page("label")
store = ui.store()
settings = ui.settings()

CHOICE_OPTIONS = ("A", "B", "Tie", "Both bad")
CHOICE_TO_SHOWN = {"A": "left", "B": "right", "Tie": "tie", "Both bad": "both_bad"}
STRENGTH_OPTIONS = ("slightly better", "clearly better", "much better")
FLAG_NAMES = {"irrelevant": "irrelevant", "not_in_catalogue": "not in catalogue", "duplicate": "duplicate",
              "bad_reason": "bad reason"}
FLAG_BY_NAME = {v: k for k, v in FLAG_NAMES.items()}

# Keyboard: 1..4 choose, Enter submits (not while typing in a text box). Runs in the page itself (see
# ui.install_page_script), installed once per browser tab.
_KEYS_JS = """
(function () {
  const doc = document;
  let latest = 0;  // the newest key press: an older one's retries stop, so that the last key wins
  // The page may be re-rendering when a key arrives: retry briefly until the choice sticks.
  function choose(idx, attempt, token) {
    if (token !== latest) { return; }
    const inputs = doc.querySelectorAll('.st-key-label_choice [role="radiogroup"] input[type="radio"]');
    const labels = doc.querySelectorAll('.st-key-label_choice [role="radiogroup"] label');
    if (inputs[idx] && inputs[idx].checked) { return; }
    if (labels[idx]) { labels[idx].click(); }
    if (attempt < 40) { setTimeout(function () { choose(idx, attempt + 1, token); }, 100); }
  }
  function submit(attempt) {
    const btn = doc.querySelector('.st-key-label_submit button');
    if (btn && !btn.disabled) { btn.click(); return; }
    if (attempt < 20) { setTimeout(function () { submit(attempt + 1); }, 100); }
  }
  doc.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing || e.repeat) { return; }
    const t = e.target || {};
    const tag = (t.tagName || '').toLowerCase();
    const typing = tag === 'textarea' || tag === 'select' || t.isContentEditable ||
      (tag === 'input' && !['radio', 'checkbox', 'button', 'submit'].includes((t.type || '').toLowerCase()));
    if (typing) { return; }
    const idx = {'1': 0, '2': 1, '3': 2, '4': 3}[e.key];
    // Enter keeps its own meaning on links, panel headers and buttons (Skip, Undo); an item's flag is a
    // button too, but a flag is part of the answer, so Enter there submits like anywhere else in it.
    const near = function (sel) { return t.closest ? t.closest(sel) : null; };
    const own = near('a, summary') || (near('button') && !near('[class*="st-key-label_flags_"]'));
    if (idx !== undefined) {
      e.preventDefault();
      latest += 1;
      choose(idx, 0, latest);
    } else if (e.key === 'Enter' && !own && doc.querySelector('.st-key-label_choice')) {
      e.preventDefault();
      submit(0);
    }
  }, true);
})();
"""


def _notice(kind: str, text: str) -> None:
    st.session_state["label.notice"] = (kind, text)


def _set_task(task: ann.Task | None) -> None:
    st.session_state["label.task"] = task
    st.session_state["label.shown_at"] = time.monotonic()


def _current_task() -> ann.Task | None:
    if "label.task" not in st.session_state:
        _set_task(ann.next_task(store, user.annotator_id, settings=settings))
    return st.session_state["label.task"]


def _flags_from_state(task: ann.Task) -> dict[str, dict[str, list[str]]]:
    flags: dict[str, dict[str, list[str]]] = {}
    for side, shown in (("left", task.left), ("right", task.right)):
        for item in shown.items:
            picked = st.session_state.get(f"label_flags_{task.assignment_id}_{side}_{item.rank}") or []
            codes = [FLAG_BY_NAME[p] for p in picked if p in FLAG_BY_NAME]
            if codes:
                flags.setdefault(side, {}).setdefault(item.item_id, []).extend(codes)
    return flags


SHOWN_TO_CHOICE = {v: k for k, v in CHOICE_TO_SHOWN.items()}


def _reset_answer() -> None:
    """Clear the answer widgets for a new pair, whichever way it came (flag and skip widgets are keyed per
    assignment)."""
    st.session_state["label_choice"] = None
    st.session_state["label_strength"] = STRENGTH_OPTIONS[1]
    st.session_state["label_rationale"] = ""


def _show_answer(task: ann.Task, answer: ann.ShownAnswer) -> None:
    """Put an undone answer back in the widgets, for the annotator to correct."""
    st.session_state["label_choice"] = SHOWN_TO_CHOICE.get(answer.choice)
    st.session_state["label_strength"] = STRENGTH_OPTIONS[(answer.strength or 2) - 1]
    st.session_state["label_rationale"] = answer.rationale or ""
    for side, shown in (("left", task.left), ("right", task.right)):
        for item in shown.items:
            codes = answer.flags.get(side, {}).get(item.item_id, [])
            st.session_state[f"label_flags_{task.assignment_id}_{side}_{item.rank}"] = [FLAG_NAMES[c] for c in codes
                                                                                        if c in FLAG_NAMES]
    st.session_state["label.answer_for"] = task.assignment_id


def _on_submit() -> None:
    """Form callback: one click is one write, then the next pair is shown in the same rerun."""
    task: ann.Task | None = st.session_state.get("label.task")
    if task is None:
        return
    picked = st.session_state.get("label_choice")
    if picked not in CHOICE_TO_SHOWN:
        _notice("warning", "Choose A, B, Tie or Both bad first (keys 1-4).")
        return
    rationale = (st.session_state.get("label_rationale") or "").strip()
    limit = settings.queue.max_rationale_chars
    if len(rationale) > limit:
        _notice("warning", f"Your rationale has {len(rationale):,} characters; shorten it to {limit:,} and submit "
                           "again (nothing was stored).")
        return
    shown = CHOICE_TO_SHOWN[picked]
    strength = None
    if shown in ("left", "right"):
        name = st.session_state.get("label_strength") or STRENGTH_OPTIONS[1]
        strength = STRENGTH_OPTIONS.index(name) + 1
    time_ms = int((time.monotonic() - st.session_state.get("label.shown_at", time.monotonic())) * 1000)
    try:
        label, nxt = ann.submit_and_next(
            store, user.annotator_id, task.assignment_id, shown, strength=strength,
            item_flags=_flags_from_state(task), rationale=rationale or None,
            time_ms=time_ms, settings=settings,
        )
    except StoreError as exc:
        _notice("error", f"{exc} Loading another pair.")
        _set_task(ann.next_task(store, user.annotator_id, settings=settings))
        return
    st.session_state["label.last"] = (label.label_id, time.monotonic())
    _set_task(nxt)  # the page clears the answer for any new pair (label.answer_for)


def _on_undo() -> None:
    last = st.session_state.pop("label.last", None)  # one undo per label, whether the store allows it or not
    try:
        task = ann.undo_last_label(store, user.annotator_id, label_id=last[0] if last else None, settings=settings)
    except StoreError as exc:
        _notice("error", str(exc))
        return
    _set_task(task)
    if task.previous_answer is not None:
        _show_answer(task, task.previous_answer)
    _notice("info", "Your last label was undone: its answer is back for you to change and submit again.")


def _on_skip() -> None:
    task: ann.Task | None = st.session_state.get("label.task")
    if task is None:
        return
    reason = st.session_state.get(f"label_skip_reason_{task.assignment_id}") or ""
    extra = (st.session_state.get(f"label_skip_note_{task.assignment_id}") or "").strip()
    if extra:
        reason = f"{reason}: {extra}" if reason else extra
    if not reason:
        _notice("warning", "Say why you skip this pair: choose a reason or write a note.")
        return
    try:
        ann.skip_task(store, user.annotator_id, task.assignment_id, reason)
    except StoreError as exc:
        _notice("error", str(exc))
        return
    _set_task(ann.next_task(store, user.annotator_id, settings=settings))
    _notice("info", "Skipped.")


@st.cache_data(ttl=30, show_spinner=False)
def _guidelines(_store_path: str) -> str:
    return ann.get_guidelines(store)


def _items_table(items, task: ann.Task) -> str:
    rows = "".join(
        f"<tr><td>{ui.esc(i.title)}</td><td>{ui.esc(i.category or '')}</td><td>{ui.esc(ui.price(i.price))}</td>"
        + (f"<td>{ui.esc(' · '.join(task.attributes(i)))}</td>" if task.attribute_keys else "") + "</tr>"
        for i in items
    )
    details = "<th>Details</th>" if task.attribute_keys else ""
    return (f'<table class="rf-table"><thead><tr><th>Title</th><th>Category</th><th>Price</th>{details}</tr></thead>'
            f"<tbody>{rows}</tbody></table>")


# ---------------------------------------------------------------- sidebar: guidelines and progress

with st.sidebar:
    progress = ann.get_progress(store, user.annotator_id)
    c1, c2, c3 = st.columns(3)
    c1.metric("Today", progress.today)
    c2.metric("Total", progress.total)
    c3.metric("Left", progress.queue_left)
    done_share = progress.total / max(1, progress.total + progress.queue_left)
    st.progress(done_share, text=f"{counted(progress.queue_left, 'pair')} left for you")
    with st.expander("Guidelines", expanded=True, icon=":material/menu_book:"):
        st.markdown(_guidelines(str(settings.store.db_path)))

st.html(ui.LIST_CSS)
ui.install_page_script(_KEYS_JS, key="rf_keys_js")

ui.one_shot_notice("label.notice")

task = _current_task()


def _undo_slot() -> None:
    """The undo button while the last label may still be undone; the slot reruns by itself when that time ends,
    so that the button goes away rather than stay for a click the store would refuse."""
    last = st.session_state.get("label.last")
    left_s = settings.queue.undo_window_s - (time.monotonic() - last[1]) if last else 0.0

    @st.fragment(run_every=max(left_s, 0.0) + 0.5 if left_s > 0 else None)
    def slot() -> None:
        still = st.session_state.get("label.last")
        open_now = bool(still) and time.monotonic() - still[1] < settings.queue.undo_window_s
        if open_now and st.button("Undo last label", key="label_undo", icon=":material/undo:",
                                  help=f"Possible for {settings.queue.undo_window_s:.0f} s after a label."):
            _on_undo()
            st.rerun(scope="app")

    with st.empty():  # every run, so that the page keeps its layout when the button goes (ui.one_shot_notice)
        slot()


_undo_slot()


@st.fragment(run_every=3)
def _first_pairs_progress() -> None:
    """While the policy writes a new store's first pairs: show how far it is, and reload when one is ready."""
    job = first_pairs.read_status(settings)
    seen = (job.state, ann.get_progress(store, user.annotator_id).queue_left)
    if st.session_state.setdefault("label.first_pairs_seen", seen) != seen:  # a pair is ready, or the job ended
        st.session_state.pop("label.first_pairs_seen", None)
        st.session_state.pop("label.task", None)
        st.rerun()
    st.info("The model is writing the first pairs for this new store. The first one appears here by itself "
            "in a moment; you need not reload.", icon=":material/hourglass_top:")
    text = f"{job.contexts_done} of {counted(job.contexts_total, 'shopper')} done; {counted(job.pairs, 'pair')} ready"
    st.progress(job.fraction, text=f"{text} ({job.message})" if job.message else text)


if task is None:
    job = first_pairs.read_status(settings)
    if job.state == "running":
        st.session_state.pop("label.first_pairs_seen", None)
        _first_pairs_progress()
        st.stop()
    if job.state == "failed" and job.pairs == 0:
        st.warning("The model could not write the first pairs for this store, so there is nothing to label yet. "
                   "Please tell an engineer (the detail is in the server's log).", icon=":material/error:")
        log.warning("first-pairs job failed: %s", job.message)
    else:
        st.success("Nothing left to label for you right now. Thank you!")
        if can_open(user.role, "training") and ann.queue_summary(store)["open_pairs"] == 0:
            st.info("The queue has no open pairs for anyone. New ones come from a training round (the Training "
                    "page) or from `recfeedback pairs bootstrap`.", icon=":material/lightbulb:")
    if st.button("Check again", key="label_refresh"):
        st.session_state.pop("label.task", None)
        st.rerun()
    st.stop()

# ---------------------------------------------------------------- the shopper

st.subheader("The shopper")
st.html("<div><b>Recent purchases</b> (most recent first)</div>"
        + (_items_table(task.history, task) if task.history else "<p>No purchases known.</p>"))
with st.expander(f"Candidate items the lists could choose from ({len(task.candidates)})"):
    st.html(_items_table(task.candidates, task))

# ---------------------------------------------------------------- the two lists and the answer

if st.session_state.get("label.answer_for") != task.assignment_id:  # a new pair, however it came: a clean answer
    _reset_answer()
    st.session_state["label.answer_for"] = task.assignment_id

with st.form("label_form", border=False, enter_to_submit=False):
    if task.same_items:
        st.info("Both lists recommend the same items in the same order: only the reasons differ, so judge them.",
                icon=":material/compare_arrows:")
    columns = st.columns(2, gap="medium")
    for column, name, side, shown in ((columns[0], "A", "left", task.left), (columns[1], "B", "right", task.right)):
        with column:
            st.markdown(f"#### List {name}")
            if shown.problems:
                badges = "".join(f'<span class="rf-badge">{ui.esc(p)}</span>' for p in shown.problems)
                st.html(f'<div class="rf-problems">Problems found: {badges}</div>')
            for item in shown.items:
                st.html(ui.item_html(item))
                st.pills(
                    f"Flags for item {item.rank} of list {name}", list(FLAG_NAMES.values()), selection_mode="multi",
                    key=f"label_flags_{task.assignment_id}_{side}_{item.rank}", label_visibility="collapsed",
                )
    st.divider()
    left, right = st.columns([3, 2])
    with left:
        st.radio("Which list is better?", CHOICE_OPTIONS, horizontal=True, key="label_choice",
                 help="Keys: 1 = A, 2 = B, 3 = tie, 4 = both bad; Enter submits.")
        st.radio("How much better?", STRENGTH_OPTIONS, horizontal=True, key="label_strength",
                 help="Ignored for Tie and Both bad.")
    with right:
        # No max_chars: the browser would drop a longer paste whole, without a word; submit says so instead.
        st.text_area("Why? (optional)", key="label_rationale", height=80,
                     placeholder="A short rationale helps reviewers.",
                     help=f"Up to {settings.queue.max_rationale_chars:,} characters.")
    st.form_submit_button("Submit (Enter)", type="primary", key="label_submit", on_click=_on_submit)

# Keyed per assignment, like the flags: the next pair's panel starts closed and empty.
with st.expander("Skip this pair", icon=":material/skip_next:", key=f"label_skip_panel_{task.assignment_id}"):
    st.selectbox("Reason", settings.queue.skip_reasons, index=None, placeholder="Why do you skip it?",
                 key=f"label_skip_reason_{task.assignment_id}")
    st.text_input("Note", key=f"label_skip_note_{task.assignment_id}", max_chars=200,
                  help="Instead of a reason, or to say more.")
    st.button("Skip", key="label_skip", on_click=_on_skip)

# Last element of the page: marks which task is fully rendered (browser tests and benchmarks wait on it).
st.html(f'<div data-task="{ui.esc(task.assignment_id)}"></div>')
