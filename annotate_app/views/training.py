"""Training page (engineers, managers, admins): start and watch rounds, past rounds, the model registry.

Thin: every action is a call into :mod:`rlhf.rounds`. A round runs as a detached background process
(``python -m rlhf.cli.rounds run``, log in its round folder), so the app keeps serving annotators; this
page only reads the rounds row, the round folder's progress file and its log. Nothing heavy is imported
here (no torch): the page starts a process instead.
Session state keys: ``training.*`` (widgets) and ``training.notice`` (a one-shot message).
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from annotate_app import ui
from rlhf import rounds as rounds_service
from rlhf import side_by_side
from rlhf import simulate as simulation
from rlhf.errors import RecFeedbackError
from rlhf.human_eval import human_win_in_words, human_win_rates
from rlhf.policies import policy_summaries
from rlhf.reward.train import method_summary
from rlhf.settings import with_values
from rlhf.wording import counted
from storage.errors import StoreError

user = ui.require_page("training")  # the role check: the menu hides the page, this refuses it
store = ui.store()
settings = ui.settings()

# Streamlit's bundled Material icons, not emoji: they render without the OS's emoji font.
STATUS_ICONS = {"running": ":green[:material/play_circle:]", "done": ":green[:material/check_circle:]",
                "failed": ":red[:material/error:]", "cancelled": ":gray[:material/stop_circle:]",
                "interrupted": ":orange[:material/warning:]", "stopped": ":blue[:material/pause_circle:]"}
CURVE_TITLES = {"reward/score": "Reward (RM score + structure)", "kl/mean": "KL to the reference",
                "reward/validity_rate": "Validity of sampled lists"}
#: Said under every chart of PPO's curves: a step's KL can read below zero, which looks like a bug and is not.
KL_CAPTION = ("KL to the reference: each sampled list's per-token estimate summed (`ppo.kl_estimator`; the default "
              "k1 is unbiased but can read below zero), averaged over the step's lists. On a step of a few lists "
              "it is noisy; its trend is what to read.")

st.title("Training")
ui.one_shot_notice("training.notice", "success")

try:
    summaries = rounds_service.list_round_summaries(store)
    policies = policy_summaries(store)  # read once for "Start from" and the registry
except StoreError as exc:
    st.error(f"The store cannot be read right now: {exc}")
    st.stop()
active = next((r for r in reversed(summaries) if r["status"] == "running"), None)


# ------------------------------------------------------------------------------------------- start
SIZES = ("Quick", "Full")


def _round_settings(size: str, parent: str | None = None):
    """The settings of a round of this size, starting from ``parent`` (None: the settings' own choice)."""
    sized = rounds_service.quick_settings(settings) if size == "Quick" else settings
    if parent is None:
        return sized
    return with_values(sized, "rounds", parent_policy=parent)


def _parent_label(policy_id: str | None, startable: list, newest: str | None) -> str:
    """A choice of the "Start from" box: the default names the policy it means; a round's policy says how it
    fared against the zero-shot model."""
    if policy_id is None:
        return f"Default ({newest})" if newest else "Default"
    summary = next(p for p in startable if p.policy_id == policy_id)
    if summary.round_id is None:
        return f"{policy_id} ({'base model' if summary.adapter_path is None else 'not from a round'})"
    return f"{policy_id} ({(summary.verdict or 'not evaluated').split(':')[0]} vs zero-shot)"


def _duration_hint(shown, size: str, usable: int) -> None:
    """How long the round is likely to take (:func:`rlhf.rounds.round_estimate`, what `round run` says too)."""
    for level, sentence in rounds_service.round_estimate(shown, summaries, usable, quick=size == "Quick",
                                                         gpu=rounds_service.gpu_visible()):
        if level == "warning":
            st.warning(sentence, icon=":material/schedule:")
        else:
            st.caption(sentence)


def _start() -> None:
    try:
        chosen = _round_settings(st.session_state.get("training.size", SIZES[0]),
                                 st.session_state.get("training.parent"))
        launched = rounds_service.launch_round(chosen, store=store)  # checks first: one round at a time, enough labels
    except (RecFeedbackError, StoreError) as exc:
        st.session_state["training.notice"] = None
        st.error(str(exc))
        return
    st.session_state["training.notice"] = (f"Round {launched.round_id} started in the background (pid {launched.pid}) "
                                           f"on {launched.usable_labels} labels.")
    st.rerun()


def _simulation_panel(too_few: bool) -> None:
    """A simulated crowd labels the queue (`recfeedback simulate`), so that a demo store's first round can start
    from the browser alone: its first pairs take a dozen labels from one person, and a round needs more."""
    with st.expander("Simulated annotators (demos and load tests)", expanded=too_few, icon=":material/smart_toy:"):
        st.caption("A crowd calibrated to about 75% raw agreement (as real labellers show) labels open pairs through "
                   "the Label page's own service, from the shop's ground truth: the demo shop's hidden preferences, "
                   "else what shoppers bought after the cut. Its labels (source `simulated`, accounts `sim_…`) train "
                   "rounds like people's; the Agreement page can leave them out, and `recfeedback users exclude` "
                   "takes them back. The same as `recfeedback simulate`.")
        wanted = int(st.number_input("Labels", min_value=1, max_value=5000, value=60, step=10,
                                     key="training.simulate_labels"))
        if not st.button("Label with simulated annotators", key="training.simulate", icon=":material/smart_toy:",
                         disabled=active is not None, help="Not while a round runs: it snapshots the labels."
                         if active is not None else None):
            return
        bar = st.progress(0.0, text="Simulated annotators are labelling…")
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            bar.progress(min(1.0, done[0] / wanted), text=f"{done[0]} of {counted(wanted, 'label')}")

        try:
            summary = simulation.label_queue(store, settings, wanted, progress=advance)
        except (RecFeedbackError, StoreError) as exc:
            st.error(str(exc))
            return
        st.session_state["training.notice"] = (
            f"{counted(summary['labels'], 'label')} by {summary['annotators']} simulated annotators"
            + ("; the queue has no open pair left for them" if summary["stopped"] == "queue empty" else "")
            + f". The store has {rounds_service.usable_label_count(store):,} usable labels now.")
        st.rerun()


with st.container(border=True):
    st.subheader("New round")
    default_size = 1 if rounds_service.gpu_visible() else 0
    size = st.radio("Size", SIZES, index=default_size, horizontal=True, key="training.size",
                    help=f"Quick: a few PPO steps on a few contexts (settings.rounds.quick), about "
                         f"{rounds_service.QUICK_MINUTES_ON_2_CORES} minutes on a 2-core CPU with the default model; "
                         "for the demo and smoke tests. Full: the sizes in the settings; meant for a GPU.")
    startable = rounds_service.startable_policies(store, settings, policies)
    try:
        newest = rounds_service.parent_policy_id(store, _round_settings(size))  # the settings' own choice
    except RecFeedbackError as exc:  # a parent_policy in the settings that no round can start from
        newest = None
        st.warning(str(exc), icon=":material/warning:")
    parent = None
    if len(startable) > 1:  # a choice only once a round has made a policy
        parent = st.selectbox(
            "Start from", [None, *(p.policy_id for p in startable)], key="training.parent",
            format_func=lambda choice: _parent_label(choice, startable, newest),
            help="The policy PPO continues from. Default: settings.rounds.parent_policy, else the newest finished "
                 "round's policy. Pick an earlier one to roll back after a round that made the lists worse.")
    shown = _round_settings(size, parent)
    r, p = shown.rounds, shown.ppo
    usable = rounds_service.usable_label_count(store)  # said up front, not only when a click is refused
    st.caption(
        f"Labels → reward model ({method_summary(shown)}) → PPO from `{parent or newest}` ({p.steps} steps, "
        f"batch {p.batch_size}) → "
        f"lists for {r.contexts_per_round} contexts → {r.new_pairs} pairs chosen by active selection "
        f"(uncertainty {r.active_uncertainty_share:.0%}, disagreement {r.active_disagreement_share:.0%}, "
        f"coverage {r.active_coverage_share:.0%}, random {r.active_random_share:.0%})"
        + (f", and up to {r.human_eval_pairs} against the parent's lists for held-out shoppers, to measure the round. "
           if r.human_eval_pairs else ". ")
        + f"Needs at least {r.min_labels} usable labels; the store has {usable:,} now. "
        f"Settings: `recfeedback.toml` [rounds], [ppo], [reward_model]."
    )
    _duration_hint(shown, size, usable)
    if size == "Quick":
        for sentence in rounds_service.quick_overrides(settings):
            st.warning(sentence, icon=":material/warning:")
    problems = rounds_service.settings_problems(shown)
    for problem in problems:  # said before a click, and the button waits until they are fixed
        st.error(problem, icon=":material/error:")
    if active:
        st.info(f"Round {active['round_id']} is running; one round at a time.")
    too_few = usable < r.min_labels  # the caption above says how many a round needs and how many there are
    if st.button("Start a round", type="primary", disabled=active is not None or bool(problems) or too_few,
                 key="training.start", icon=":material/play_arrow:",
                 help=f"Needs at least {r.min_labels} usable labels; the store has {usable:,}." if too_few else None):
        _start()

_simulation_panel(too_few)


# ------------------------------------------------------------------------------------------- live view
def _ppo_curves_chart(curves: pd.DataFrame, *, points: bool) -> alt.FacetChart:
    """PPO's per-step curves (``step, metric, value`` rows of :data:`CURVE_TITLES` metrics), one small
    panel per metric under its readable title, three to a row so that they fit the page's width."""
    named = curves.assign(metric=curves["metric"].map(CURVE_TITLES))
    return alt.Chart(named).mark_line(point=points).encode(
        x=alt.X("step:Q", axis=alt.Axis(format="d", tickMinStep=1)),  # steps are whole: no "1.5" ticks
        y=alt.Y("value:Q", title=None, axis=alt.Axis(format=".3~f")), color=alt.Color("metric:N", legend=None),
        tooltip=["step", "metric", alt.Tooltip("value:Q", format=".4f")],
    ).properties(width=220, height=160).facet(facet=alt.Facet("metric:N", title=None), columns=3).resolve_scale(
        y="independent")


def _progress_view(round_id: str) -> None:
    status = rounds_service.round_status(store, round_id)
    state = status["status"]
    st.markdown(f"**{STATUS_ICONS.get(state, '')} Round `{round_id}` — {state}**, stage `{status['stage']}`")
    done = status["completed_stages"]
    st.progress(len(done) / len(rounds_service.STAGES),
                text=" → ".join(f"**{s}**" if s == status["stage"] else s for s in rounds_service.STAGES))
    prog = status["progress"]
    if prog.get("total"):
        step, total = int(prog.get("step") or 0), int(prog["total"])
        extra = ""
        if prog.get("reward") is not None:
            extra = f" · reward {prog['reward']:.3f} · KL {prog.get('kl') or 0:.3f}"
        left = rounds_service.stage_seconds_left(prog) if state == "running" else None
        if left is not None:
            extra += f" · {rounds_service.stage_left_text(left)}"
        st.progress(min(1.0, step / max(total, 1)), text=f"{prog.get('stage')}: {step}/{total}{extra}")
    if state == "running":
        _like_round_hint(round_id, prog)
    if status["timings"]:
        st.caption("Seconds per finished stage: " + ", ".join(f"{k} {v:.1f}" for k, v in status["timings"].items()))
    if status["error"] and state == "cancelled":  # what the engineer asked for: no red box
        st.info(f"{status['error']} The store is as it was before the round; Resume continues it after its last "
                "finished stage.", icon=":material/stop_circle:")
    elif status["error"]:
        st.error(status["error"])
    if status["folder"]:
        curves = rounds_service.live_ppo_metrics(status["folder"])
        wanted = curves[curves["metric"].isin(CURVE_TITLES)] if not curves.empty else curves
        if not wanted.empty:
            st.altair_chart(_ppo_curves_chart(wanted, points=True))
            st.caption(KL_CAPTION)
        with st.expander("Log", expanded=state == "running"):
            st.code(rounds_service.log_tail(Path(status["folder"]), 30) or "(no log yet)", language=None,
                    wrap_lines=True)
    cols = st.columns(3)
    if state == "running" and cols[0].button("Cancel round", key=f"training.cancel.{round_id}",
                                             icon=":material/stop:"):
        with st.spinner("Stopping the round…"):
            try:
                rounds_service.cancel_round(store, round_id)
                st.session_state["training.notice"] = f"Round {round_id} was cancelled; the store is unchanged."
            except (RecFeedbackError, StoreError) as exc:
                st.error(str(exc))
        st.rerun()
    if state in ("failed", "cancelled", "interrupted", "stopped") and cols[0].button(
            "Resume round", key=f"training.resume.{round_id}", icon=":material/replay:",
            disabled=active is not None and active["round_id"] != round_id):
        try:
            rounds_service.launch_round(settings, round_id=round_id, resume=True, store=store)
            st.session_state["training.notice"] = f"Round {round_id} resumed after its last finished stage."
        except (RecFeedbackError, StoreError) as exc:
            st.error(str(exc))
        st.rerun()


@st.cache_data(ttl=600, show_spinner=False, max_entries=16)
def _like_round(data_dir: str, round_id: str, _summaries: list) -> rounds_service.PastDuration | None:
    """The last finished round with ``round_id``'s settings. It cannot change while that round runs (one round at
    a time), so the live view, which redraws every 3 s, reads the rounds' settings files once."""
    return rounds_service.last_duration_like(round_id, _summaries)


def _like_round_hint(round_id: str, progress: dict) -> None:
    """How long the last round with the running round's settings took, and so how long this one has left."""
    past = _like_round(str(settings.data_dir), round_id, summaries)
    if past is None:
        return
    said = f"The last round with these settings took {rounds_service.duration_text(past.seconds)} (`{past.round_id}`)"
    left = rounds_service.round_seconds_left(progress, past)
    st.caption(said + (f"; at this stage's pace and its later stages' times, this one has "
                       f"{rounds_service.duration_text(left)} left." if left is not None else "."))


@st.fragment(run_every=3)
def _live(round_id: str) -> None:
    _progress_view(round_id)
    if rounds_service.round_status(store, round_id)["status"] != "running":
        st.rerun()  # finished: redraw the whole page (history, registry)


latest = summaries[-1] if summaries else None
if active is not None:
    st.subheader("Current round")
    _live(active["round_id"])
elif latest is not None:
    st.subheader("Latest round")
    _progress_view(latest["round_id"])


# ------------------------------------------------------------------------------------------- history
#: Below this many held-out shoppers a round's paired verdict cannot see the effects rounds have (settings.py,
#: rounds.eval_contexts; BENCHMARKS.md).
FEW_SHOPPERS = 200


def _evaluation_view(table: pd.DataFrame, status: str) -> None:
    """The round's held-out report: its policy beside its parent, the zero-shot model and the baselines."""
    # N is the round's list length (its report's ndcg@N column), not necessarily today's setting.
    n = next((int(c.split("@")[1]) for c in table.columns if c.startswith("ndcg@")), None)
    if table.empty or n is None:
        st.caption("This round stored no held-out evaluation (no held-out contexts)." if status == "done" else
                   f"This round is {status}: it has no held-out evaluation, which a round stores when it finishes.")
        return
    shoppers = int(table["contexts"].max()) if "contexts" in table else 0
    targets = int(table["contexts_with_targets"].max()) if "contexts_with_targets" in table else 0
    st.markdown(f"**Held-out evaluation**: {shoppers} shoppers, {targets} of them with purchases after the cut "
                "(HR and NDCG count those); 95% bootstrap intervals.")
    if shoppers < FEW_SHOPPERS:
        st.caption(f"On {shoppers} shoppers the intervals are wide, so \"no detectable difference\" says little "
                   f"here. `rounds.eval_contexts` sets how many held-out "
                   f"shoppers a round evaluates (a Full round: {settings.rounds.eval_contexts}); on UCI, 40 shoppers "
                   "gave a paired NDCG interval ±0.03 wide and 240 ±0.009 (BENCHMARKS.md).")
    chart = table.rename(columns={f"ndcg@{n}": "ndcg"})
    chart["label"] = [p.removeprefix("baseline:") if r == "baseline" else r for r, p in zip(chart["role"], chart["policy"])]
    base = alt.Chart(chart).encode(y=alt.Y("label:N", sort=None, title=None), color=alt.Color("role:N", legend=None))
    st.altair_chart(
        (base.mark_rule().encode(x=alt.X("ndcg_lo:Q", title=f"NDCG@{n}"), x2="ndcg_hi:Q")
         + base.mark_point(filled=True, size=80).encode(
             x="ndcg:Q", tooltip=["role", "policy", alt.Tooltip("ndcg:Q", format=".4f"),
                                  alt.Tooltip("ndcg_lo:Q", format=".4f"), alt.Tooltip("ndcg_hi:Q", format=".4f")]))
        .properties(height=40 * len(chart) + 40),
        width="stretch",
    )
    cols = [c for c in ["role", "policy", "contexts_with_targets", f"ndcg@{n}", "ndcg_lo", "ndcg_hi", "verdict",
                        "paired_diff", "paired_lo", "paired_hi", f"hr@{n}", "hr_lo", "hr_hi", "validity", "item_validity",
                        "diversity", "novelty", "coverage", "reasons_grounded", "reasons_verdict"] if c in table]
    fmt = {c: st.column_config.NumberColumn(format="%.4f") for c in cols if c.startswith(("ndcg", "hr"))}
    fmt |= {c: st.column_config.NumberColumn(format="percent") for c in ("validity", "item_validity", "coverage")}
    fmt |= {"validity": st.column_config.NumberColumn("held-out lists valid", format="percent"),
            "item_validity": st.column_config.NumberColumn("items valid", format="percent"),
            "contexts_with_targets": st.column_config.NumberColumn("shoppers who bought later", format="%d"),
            "ndcg_lo": st.column_config.NumberColumn("NDCG lo", format="%.4f"),
            "ndcg_hi": st.column_config.NumberColumn("NDCG hi", format="%.4f"),
            "hr_lo": st.column_config.NumberColumn("HR lo", format="%.4f"),
            "hr_hi": st.column_config.NumberColumn("HR hi", format="%.4f")}
    fmt |= {"reasons_grounded": st.column_config.NumberColumn(
        "reasons grounded", format="percent", help="Reasons that share a word with the item's title or category "
        "or with the shopper's earlier purchases, besides any product line they begin with, and are more than a "
        "product's name: the rest are about something else or only a product line (a lexical check).")}
    fmt |= {"reasons_verdict": st.column_config.TextColumn(
        "new policy's reasons vs this", help="The new policy's share of grounded reasons minus this policy's, "
        "over the same shoppers, with its 95% interval.")}
    fmt |= {"paired_diff": st.column_config.NumberColumn(f"new minus this, NDCG@{n}", format="%+.4f"),
            "paired_lo": st.column_config.NumberColumn("paired lo", format="%+.4f"),
            "paired_hi": st.column_config.NumberColumn("paired hi", format="%+.4f"),
            "verdict": st.column_config.TextColumn("new policy vs this", help="From the paired interval: better "
                                                   "(above zero), worse (below) or no detectable difference.")}
    st.dataframe(table[cols], hide_index=True, width="stretch", column_config=fmt)
    if "paired_diff" in table and table["paired_diff"].notna().any():
        st.caption("New minus this: the new policy's NDCG minus the row's, over the same shoppers. The round "
                   "beat that policy only if the paired interval lies above zero (the verdict column); a ratio of "
                   "the two rows' NDCGs, or their intervals alone, do not decide it.")


def _side_by_side_view(round_id: str) -> None:
    """The round's lists beside its parent's (and the zero-shot model's) for one held-out shopper at a time."""
    shoppers = side_by_side.round_side_by_side(store, settings, round_id)
    if not shoppers:
        return
    # Keyed and tracked, so that picking another shopper inside it does not fold it up again.
    with st.expander("Lists side by side: what the round changed, shopper by shopper", icon=":material/compare:",
                     key=f"training.sbs_open.{round_id}", on_change="rerun"):
        st.caption("Each policy's first list for the same held-out shopper; \"bought later\" marks what the shopper "
                   "bought after the cut, \"off-topic reason\" a reason that names nothing of the item or of the "
                   "shopper's earlier purchases, \"reason only names a product\" one that only repeats a candidate's "
                   "title and details from the prompt, or writes an item in that format under a name of its own. "
                   "Shoppers who bought something come first, those on whom the lists score most differently at "
                   "the top.")

        def describe(i: int) -> str:
            s = shoppers[i]
            scores = ", ".join(f"{c.role} {c.ndcg:.2f}" for c in s.columns)
            return f"shopper {s.shopper_id}: NDCG {scores}" if s.bought_later else f"shopper {s.shopper_id}: bought nothing later"

        pick = st.selectbox("Shopper", range(len(shoppers)), format_func=describe, key=f"training.sbs.{round_id}")
        shopper = shoppers[pick]
        st.html(ui.LIST_CSS)
        # Wholesale shoppers buy hundreds of items later: the ones a policy listed first, then a few others.
        listed = {i.item_id for c in shopper.columns for i in c.shown.items if i.rank in c.bought_ranks}
        later = sorted(shopper.bought_later, key=lambda i: i.item_id not in listed)
        bought = ", ".join(f"<b>{ui.esc(i.title)}</b>" if i.item_id in listed else ui.esc(i.title) for i in later[:12])
        bought = (bought + (f" and {len(later) - 12} more" if len(later) > 12 else "")) or "nothing"
        history = ", ".join(ui.esc(i.title) for i in shopper.history) or "nothing known"
        st.html(f"<div><b>Bought before</b> (most recent first): {history}</div>"
                f"<div><b>Bought after the cut</b> ({len(later)} items; in bold: listed by a policy below): {bought}</div>")
        for column, policy in zip(st.columns(len(shopper.columns)), shopper.columns):
            with column:
                valid = "valid" if policy.is_valid else "invalid"
                st.markdown(f"**{policy.role}** · NDCG {policy.ndcg:.2f} · {valid}")
                st.caption(policy.policy_id)
                for item in policy.shown.items:
                    st.html(ui.item_html(item, bought_later=item.rank in policy.bought_ranks,
                                         off_topic=item.rank in policy.off_topic_ranks,
                                         copied=item.rank in policy.copied_ranks))


def _settings_view(recorded: rounds_service.RoundSettings) -> None:
    """The settings the round trained and sampled with; those that differ from the round before first."""
    if not recorded.recorded:
        st.caption("This round's folder holds no settings.json, so what it ran with is not known.")
        return
    before = recorded.previous_round_id
    if before is None:
        title = "Settings this round ran with (the first round)"
    elif not recorded.previous_recorded:
        title = f"Settings this round ran with ({before}, the round before, recorded none to compare)"
    elif recorded.changes:
        n = len(recorded.changes)
        title = f"Settings: {n} differ{'s' if n == 1 else ''} from the round before ({before})"
    else:
        title = f"Settings: the same as the round before ({before})"
    with st.expander(title, icon=":material/tune:"):
        rows = sorted(recorded.values, key=lambda v: not v.changed)  # stable: the changes first, then dotted order
        if recorded.changes and st.toggle("Changes only", key="training.settings_changes_only",
                                          help="Hide the settings this round shares with the round before."):
            rows = [v for v in rows if v.changed]
        said = rounds_service.setting_text
        frame = pd.DataFrame({"setting": [v.setting for v in rows], "this round": [said(v.value) for v in rows]})
        if recorded.previous_recorded:
            frame["round before"] = [said(v.previous) for v in rows]
            frame["changed"] = [v.changed for v in rows]
        st.dataframe(frame, hide_index=True, width="stretch")


st.subheader("Past rounds")
frame = rounds_service.rounds_metrics_frame(store, summaries)  # the rounds read at the top of the page
if frame.empty:
    st.info("No rounds yet. Collect labels on the Label page (or with the simulated annotators above), then start one.")
else:
    # Each round names its ranking metrics after its own list length N (rounds run with other settings differ).
    humans = human_win_rates(store)
    frame["human_win"] = [human_win_in_words(*humans.get(r, (None, 0))) for r in frame["round_id"]]
    lengths = sorted({int(c.split("@")[1]) for c in frame.columns if c.startswith("ndcg@")})
    ranking = [c for n in lengths for c in (f"ndcg@{n}", f"zero_shot_ndcg@{n}", f"hr@{n}")]
    # The verdict against the zero-shot model first: whether the loop has made the lists better so far.
    show = [c for c in ["round", "round_id", "status", "ndcg_vs_zero_shot", "reasons_vs_zero_shot", "policy_id",
                        "parent_policy_id", "human_win", "rm_heldout_accuracy", "rm_heldout_pairs", "rm_heldout_accuracy_unselected",
                        "rm_heldout_unselected_pairs", "ppo_reward", "ppo_kl",
                        "generation_validity", "eval_reasons_grounded", "rm_win_rate", "rm_win_rate_vs_zero_shot",
                        *ranking, "pairs_enqueued", "settings_changed", "seconds"]
            if c in frame]
    st.dataframe(ui.with_verdicts_said(frame[show]), hide_index=True, width="stretch",
                 column_config={"parent_policy_id": st.column_config.TextColumn(
                                    "started from", help="The policy PPO continued from: the newest round's, or the "
                                    "one chosen in \"Start from\" (rounds.parent_policy)."),
                                "human_win": st.column_config.TextColumn(
                                    "annotators prefer it to its parent", help="Labels preferring the round's policy "
                                    "to its parent, with the 95% interval, on pairs no model chose: the round's "
                                    "human-evaluation pairs on held-out shoppers, its random slice, `pairs make`."),
                                "rm_heldout_accuracy": st.column_config.NumberColumn("RM accuracy", format="%.3f"),
                                "rm_heldout_pairs": st.column_config.NumberColumn(
                                    "RM held-out pairs", help="The pairs the RM accuracy was measured on: on a few, "
                                    "it says little."),
                                "rm_heldout_accuracy_unselected": st.column_config.NumberColumn(
                                    "RM accuracy, no model chose", format="%.3f", help="On the held-out pairs "
                                    "chosen without a model. Rounds' active pairs are the ones the last reward "
                                    "model found close and are harder, so the accuracy over all pairs drifts down "
                                    "as rounds add them; this one does not."),
                                "rm_heldout_unselected_pairs": st.column_config.NumberColumn(
                                    "of which no model chose", format="%d"),
                                "generation_validity": st.column_config.NumberColumn(
                                    "new lists valid", format="percent", help="The lists the round wrote for its "
                                    "training shoppers (its new pairs); the held-out report below counts the lists "
                                    "for held-out shoppers, and `policy list` every list of the policy."),
                                "eval_reasons_grounded": st.column_config.NumberColumn(
                                    "reasons grounded", format="percent", help="Held-out lists' reasons that share "
                                    "a word with the item or the shopper's earlier purchases, besides any product "
                                    "line they copy (a lexical check)."),
                                "rm_win_rate": st.column_config.NumberColumn("RM win rate", format="%.3f"),
                                "rm_win_rate_vs_zero_shot": st.column_config.NumberColumn("RM win rate vs zero-shot",
                                                                                          format="%.3f"),
                                **{f"zero_shot_ndcg@{n}": st.column_config.NumberColumn(f"zero-shot NDCG@{n}",
                                                                                        format="%.4f")
                                   for n in lengths},
                                **{f"ndcg@{n}": st.column_config.NumberColumn(f"NDCG@{n}", format="%.4f")
                                   for n in lengths},
                                **{f"hr@{n}": st.column_config.NumberColumn(f"HR@{n}", format="%.4f")
                                   for n in lengths},
                                "ndcg_vs_zero_shot": st.column_config.TextColumn(
                                    "NDCG vs zero-shot, paired", help="The round's NDCG minus the zero-shot model's "
                                    "over the same held-out shoppers, with its 95% interval: 'better' only when "
                                    "the interval lies above zero."),
                                "reasons_vs_zero_shot": st.column_config.TextColumn(
                                    "reasons vs zero-shot, paired", help="The round's share of reasons about the "
                                    "item or the shopper's earlier purchases minus the zero-shot model's, over the "
                                    "same held-out shoppers, with its 95% interval."),
                                "settings_changed": st.column_config.TextColumn(
                                    "settings changed", help="The training settings that differ from the round "
                                    "before's (Round details below lists them all)."),
                                "seconds": st.column_config.NumberColumn(format="%.0f")})
    charts = {"ppo_reward": "Reward (last PPO step)", "ppo_kl": "KL (last PPO step)",
              "generation_validity": "Validity of new lists", "rm_heldout_accuracy": "Reward-model held-out accuracy",
              "rm_heldout_accuracy_unselected": "RM accuracy, pairs no model chose",
              "eval_reasons_grounded": "Reasons about the item or shopper",
              "rm_win_rate": "RM win rate vs previous policy", "rm_win_rate_vs_zero_shot": "RM win rate vs zero-shot",
              **{f"ndcg@{n}": f"NDCG@{n} (held-out)" for n in lengths},
              # In the same panel as the round's own NDCG: the bar each round has to clear.
              **{f"zero_shot_ndcg@{n}": f"NDCG@{n} (held-out)" for n in lengths}}
    done = frame[frame["status"] == "done"]
    long = done.melt(id_vars="round", value_vars=[c for c in charts if c in done], var_name="metric",
                     value_name="value").dropna(subset=["value"])
    if not long.empty:
        long["policy"] = ["zero-shot" if m.startswith("zero_shot_") else "the round's" for m in long["metric"]]
        long["metric"] = long["metric"].map(charts)
        st.altair_chart(
            alt.Chart(long).mark_line(point=True).encode(
                # ".3~f": a single round's 0 reads "0", not "0.000000".
                x=alt.X("round:O", title="round", axis=alt.Axis(labelAngle=0)),
                y=alt.Y("value:Q", title=None, axis=alt.Axis(format=".3~f")),
                color=alt.Color("policy:N", title="policy", legend=alt.Legend(orient="bottom")),
                tooltip=["round", "metric", "policy", alt.Tooltip("value:Q", format=".3f")],
            ).properties(width=220, height=160).facet(facet=alt.Facet("metric:N", title=None), columns=3)
            .resolve_scale(y="independent"),
        )
    chosen = st.selectbox("Round details", frame["round_id"].tolist()[::-1], key="training.detail")
    if chosen:
        curves = rounds_service.round_curves(store, chosen)
        wanted = curves[curves["metric"].isin(CURVE_TITLES)] if not curves.empty else curves
        if not wanted.empty:
            st.altair_chart(_ppo_curves_chart(wanted, points=False))
            st.caption(KL_CAPTION)
        detail = rounds_service.round_status(store, chosen)
        _evaluation_view(rounds_service.round_evaluation(store, chosen), detail["status"])
        _side_by_side_view(chosen)
        _settings_view(rounds_service.round_settings(store, chosen, summaries))
        table = (detail["metrics"] or {})
        st.caption("Stage timings (seconds), the round's metrics and its error, if any:")
        st.json({"timings_s": detail["timings"], "metrics": table, "error": detail["error"]}, expanded=False)

# ------------------------------------------------------------------------------------------- registry
st.subheader("Model registry")
registry = rounds_service.model_registry(store, policies)
tab_rm, tab_pol = st.tabs(["Reward models", "Policies"])
with tab_rm:
    if registry["reward_models"].empty:
        st.caption("No reward model yet.")
    else:
        st.dataframe(registry["reward_models"], hide_index=True, width="stretch",
                     column_config={"heldout_accuracy": st.column_config.NumberColumn(format="%.3f"),
                                    "heldout_accuracy_unselected": st.column_config.NumberColumn(
                                        "heldout_accuracy, no model chose", format="%.3f"),
                                    "gold_accuracy": st.column_config.NumberColumn(format="%.3f"),
                                    "ece": st.column_config.NumberColumn(format="%.3f")})
with tab_pol:
    if registry["policies"].empty:
        st.caption("No policy yet.")
    else:
        st.dataframe(registry["policies"], hide_index=True, width="stretch", column_config={
            "verdict": st.column_config.TextColumn("NDCG vs zero-shot, paired"),
            "n_lists": st.column_config.NumberColumn("lists", format="%d"),
            "validity": st.column_config.NumberColumn("valid", format="percent")})
        trained = registry["policies"][registry["policies"]["adapter_path"].notna()]
        if not trained.empty:
            newest = trained.iloc[-1]["policy_id"]
            st.caption("To serve a policy elsewhere, export it as a standalone transformers model (its adapter "
                       "merged into the base, with a model card); for the newest one:")
            st.code(f"recfeedback policy export {newest} --out exports/{newest}", language="bash")
st.caption(f"{counted(len(summaries), 'round')} · data folder `{settings.data_dir}`")
