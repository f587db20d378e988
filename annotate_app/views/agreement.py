"""Agreement page (managers, admins): agreement, annotator quality, aggregation, throughput, queue, rounds.

Thin: filters in the sidebar build a :class:`storage.analytics.LabelSelection`; every number comes from
:mod:`rlhf.dashboard` (cached per selection); this file only lays out tables and Altair charts.
Session state keys: ``agreement.*`` widget keys only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import altair as alt
import pandas as pd
import streamlit as st

from annotate_app import ui
from rlhf import annotation, exclusion
from rlhf import dashboard as dash_service
from rlhf import gold as gold_service
from rlhf.errors import RecFeedbackError
from rlhf.wording import counted
from storage.analytics import NO_ROUND, LabelSelection
from storage.errors import StoreError

GOLD_CHOICES = {"A": "A is better", "B": "B is better", "tie": "Tie", "both_bad": "Both bad"}

user = ui.require_page("agreement")  # the role check: the menu hides the page, this refuses it
store = ui.store()
settings = ui.settings()


@st.cache_data(ttl=30, show_spinner=False)
def _options(db_path: str) -> dict:
    return dash_service.filter_options(store)


@st.cache_data(ttl=60, show_spinner=False, max_entries=8)
def _dashboard(db_path: str, selection: LabelSelection, kappa_option: str, n_boot: int) -> dash_service.Dashboard:
    return dash_service.build_dashboard(store, selection, settings, kappa_option=kappa_option, n_boot=n_boot)


@st.cache_data(ttl=60, show_spinner=False, max_entries=16)
def _drilldown(db_path: str, annotator_id: str, selection: LabelSelection) -> pd.DataFrame:
    return dash_service.annotator_labels(store, annotator_id, selection)


def _exclusion_action(action: Callable[[], exclusion.Exclusion]) -> None:
    """Button callback: exclude or restore an annotator's labels; the page reruns with its sentence and fresh
    numbers."""
    try:
        done = action()
    except (RecFeedbackError, StoreError) as exc:
        st.session_state["agreement.notice"] = ("error", str(exc))
        return
    st.cache_data.clear()
    st.session_state["agreement.notice"] = done.sentence()


def _gold_form() -> None:
    """Review one pair as annotators see it (list A on the left) and give it a gold answer."""
    pair_id = st.text_input("Pair to review", key="agreement.gold.pair", placeholder="pair_…",
                            help="Pair ids are in the drill-down and in label exports.").strip()
    if not pair_id:
        return
    try:
        task = annotation.pair_as_shown(store, pair_id, settings=settings)
    except (RecFeedbackError, StoreError) as exc:
        st.error(str(exc))
        return
    st.html(ui.LIST_CSS)
    history = ", ".join(ui.esc(i.title) for i in task.history) or "nothing known"
    st.html(f"<div><b>Bought before</b> (most recent first): {history}</div>")
    for column, (side, shown) in zip(st.columns(2), (("A", task.left), ("B", task.right))):
        with column:
            st.markdown(f"**List {side}**" + (f" · {', '.join(shown.problems)}" if shown.problems else ""))
            for item in shown.items:
                st.html(ui.item_html(item))
    tally = gold_service.label_tally(store, pair_id)
    st.caption("Labels so far: " + (", ".join(f"{c} {n}" for c, n in sorted(tally.items())) or "none"))
    gold = gold_service.gold_of(store, pair_id)
    if gold is not None:
        st.info(f"This pair is gold already: {GOLD_CHOICES[gold.answer]}, given by {gold.created_by or 'an import'}"
                + (f" ({gold.note})" if gold.note else "") + ". Saving replaces that answer.")
    with st.form(f"agreement.gold.form.{pair_id}"):
        answer = st.radio("Gold answer", list(GOLD_CHOICES), horizontal=True, format_func=GOLD_CHOICES.get,
                          index=list(GOLD_CHOICES).index(gold.answer) if gold else None,
                          key=f"agreement.gold.answer.{pair_id}")
        note = st.text_input("Why (kept with the answer)", key=f"agreement.gold.note.{pair_id}")
        if st.form_submit_button("Save as gold", key=f"agreement.gold.save.{pair_id}"):
            if answer is None:
                st.warning("Choose the gold answer first.")
                return
            try:
                gold_service.mark_gold(store, pair_id, answer, by=user.annotator_id, note=note)
            except (RecFeedbackError, StoreError) as exc:
                st.error(str(exc))
            else:  # rerun, so that the table above and the gold figures include it
                st.cache_data.clear()
                st.session_state["agreement.gold.notice"] = f"Pair {pair_id} is gold, answer {GOLD_CHOICES[answer]}."
                st.rerun()


def _download(frame: pd.DataFrame, name: str, key: str) -> None:
    """A CSV download button under a table (every table on this page has one)."""
    st.download_button(f"Download {name} (CSV)", frame.to_csv(index=False).encode("utf-8"),
                       file_name=f"{name}.csv", mime="text/csv", key=f"agreement.dl.{key}",
                       icon=":material/download:")


#: Headers for the columns several tables share (a table's own config adds to or overrides them).
HEADERS = {
    "annotator_id": "Annotator", "pair_id": "Pair", "round_id": "Round", "strategy": "Strategy", "labels": "Labels",
    "day": st.column_config.DateColumn("Day (UTC)"), "pairs": "Pairs", "complete": "Complete",
    "waiting_for_overlap": "Waiting for overlap", "unlabelled": "Unlabelled", "labels_needed": "Labels needed",
    "live_leases": "Being labelled", "open_pairs": "Open", "gold_labels": "Gold labels", "reshow_labels": "Re-shows",
    "gold_rate": st.column_config.NumberColumn("Gold rate", format="percent"),
    "reshow_rate": st.column_config.NumberColumn("Re-show rate", format="percent"),
    "method": "Method", "contested_pairs": "Contested pairs", "gold_pairs": "Gold pairs", "choice": "Choice",
    "strength": "Strength", "n_labels": "Labels", "n_agree": "Agreeing", "agreement": "Agreement",
    "contested": st.column_config.CheckboxColumn("Contested"), "status": "Status",
    "created_at": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm"),
}


db_key = str(settings.store.db_path.resolve())
st.title("Agreement")

try:
    options = _options(db_key)
except StoreError as exc:
    st.error(f"The store cannot be read right now: {exc}")
    st.stop()

# ------------------------------------------------------------------------------------------- filters
with st.sidebar:
    st.header("Filters")
    rounds = st.multiselect("Round", options["rounds"], key="agreement.rounds",
                            help=f"'{NO_ROUND}' = pairs made outside any training round.")
    strategies = st.multiselect("Pair strategy", options["strategies"], key="agreement.strategies")
    sources = st.multiselect("Label source", options["sources"], key="agreement.sources",
                             help="app = labelled here; import = recfeedback import-labels; others from simulations.")
    annotators = st.multiselect("Annotators", options["annotators"], key="agreement.annotators",
                                help="Only these annotators' labels count everywhere on the page, also as the "
                                "others an annotator is compared with (agreement, kappa, LOO majority). The "
                                "drill-down compares with everyone.")
    first, last = options["first_label"][0], options["last_label"][0]
    dates = None
    if first is not None and last is not None:
        dates = st.date_input("Label dates (UTC)", value=(first.date(), last.date()), key="agreement.dates")
    kappa_option = st.selectbox("Cohen's kappa on", list(dash_service.KAPPA_OPTIONS), key="agreement.kappa")
    n_boot = st.number_input("Bootstrap resamples", min_value=0, max_value=5000, step=100,
                             value=settings.quality.bootstrap_samples, key="agreement.boot",
                             help="For the 95% intervals (items resampled with replacement). 0 = none.")
    if st.button("Refresh", icon=":material/refresh:", key="agreement.refresh"):
        st.cache_data.clear()

date_from = date_to = None
if isinstance(dates, (tuple, list)) and len(dates) == 2:
    date_from, date_to = dates
    if (date_from, date_to) == (first.date(), last.date()):
        date_from = date_to = None  # the whole span: no restriction (labels added later still show)

selection = LabelSelection(
    round_ids=tuple(rounds) or None, strategies=tuple(strategies) or None, sources=tuple(sources) or None,
    annotators=tuple(annotators) or None, date_from=date_from, date_to=date_to,
)

with st.spinner("Computing agreement..."):
    try:
        dash = _dashboard(db_key, selection, kappa_option, int(n_boot))
    except StoreError as exc:
        st.error(f"The store cannot be read right now: {exc}")
        st.stop()

c = dash.counts
cols = st.columns(5)
cols[0].metric("Labels", f"{c['labels']:,}")
cols[1].metric("Pairs", f"{c['pairs']:,}")
cols[2].metric("Pairs with 2+ labels", f"{c['pairs_with_2plus']:,}")
cols[3].metric("Annotators", f"{c['annotators']:,}")
flagged = int((dash.quality["flags"] != "").sum()) if len(dash.quality) else 0
cols[4].metric("Flagged annotators", f"{flagged:,}")
if c["labels"] == 0:
    st.info("No labels match this selection yet. Labels appear here as annotators work on the Label page, "
            "or after `recfeedback import-labels`.")

tab_agree, tab_people, tab_agg, tab_flow, tab_rounds = st.tabs(
    ["Agreement", "Annotators", "Aggregation", "Throughput & queue", "Round quality"])

# ----------------------------------------------------------------------------------------- agreement
with tab_agree:
    if dash.summary.empty:
        st.info("No pair in this selection has two labels yet, so agreement cannot be measured.")
    else:
        top = dash.summary.set_index("metric")
        fewest = int(dash.summary["n_items"].min())
        if fewest < settings.quality.min_pairs_for_agreement:
            st.warning(f"Some of these coefficients rest on {counted(fewest, 'pair')} with two or more labels "
                       f"(fewer than {settings.quality.min_pairs_for_agreement}, quality.min_pairs_for_agreement): "
                       "read them with their intervals, which say how little is known yet.")
        m = st.columns(3)
        m[0].metric("Raw agreement", f"{top.loc['raw_agreement', 'value']:.1%}")
        m[1].metric("Krippendorff's alpha (nominal)", f"{top.loc['krippendorff_alpha_nominal', 'value']:.3f}")
        m[2].metric("Krippendorff's alpha (ordinal, 7-point)", f"{top.loc['krippendorff_alpha_ordinal', 'value']:.3f}")
        st.dataframe(
            dash.summary[["label", "value", "ci_low", "ci_high", "n_items", "n_labels", "convention"]],
            hide_index=True, width="stretch",
            column_config={"label": "Coefficient", "value": st.column_config.NumberColumn("Value", format="%.3f"),
                           "ci_low": st.column_config.NumberColumn(
                "95% low", format="%.3f"), "ci_high": st.column_config.NumberColumn("95% high", format="%.3f"),
                "n_items": st.column_config.NumberColumn("Pairs used", format="%d"),
                "n_labels": st.column_config.NumberColumn(
                    "Labels", format="%d", help="The labels on the pairs used (pairs with one label are not used)."),
                "convention": st.column_config.TextColumn("Weighting / level / library", width="large")},
        )
        st.caption("Choice = A / B / tie / both bad (nominal). 7-point scale = -3 'A much better' .. 0 tie .. "
                   "+3 'B much better'; 'both bad' has no place on it and is left out; a missing strength "
                   f"counts as 'slightly'. Intervals: percentile bootstrap over pairs ({int(n_boot)} resamples). "
                   "Re-shown labels are not counted twice.")
        _download(dash.summary, "agreement_summary", "summary")

    st.subheader("Cohen's kappa between annotators")
    st.caption(f"{dash.kappa_convention}. scikit-learn `cohen_kappa_score` on the pairs both annotators labelled; "
               f"the {settings.quality.kappa_heatmap_annotators} most active annotators; blank where they share "
               f"fewer than {settings.quality.kappa_min_shared} pairs.")
    heat = dash_service.kappa_long(dash.kappa)
    if not heat["kappa"].notna().any():
        st.info("Not enough annotators share pairs yet for a kappa heatmap.")
    else:
        heat_chart = alt.Chart(heat.dropna(subset=["kappa"])).mark_rect().encode(
            x=alt.X("rater_b:N", title=None), y=alt.Y("rater_a:N", title=None),
            color=alt.Color("kappa:Q", scale=alt.Scale(scheme="redblue", domain=[-1, 1]), title="kappa"),
            tooltip=["rater_a", "rater_b", alt.Tooltip("kappa:Q", format=".3f"), "shared:Q"],
        ).properties(height=min(40 * len(dash.kappa.kappa) + 40, 700))
        st.altair_chart(heat_chart, width="stretch")
    _download(dash_service.kappa_long(dash.kappa, both_ways=False), "cohen_kappa_pairs", "kappa")

# ---------------------------------------------------------------------------------------- annotators
with tab_people:
    q = dash.quality
    if q.empty:
        st.info("No annotator has labels in this selection.")
    else:
        s = settings.quality
        st.caption(
            f"Flags: too fast (median < {s.too_fast_median_s:g} s), always one side (left share >= "
            f"{s.one_side_share:.0%} or <= {1 - s.one_side_share:.0%} and binomial p < {s.position_bias_alpha:g}), "
            f"low gold accuracy (< {s.min_gold_accuracy:.0%}, >= {s.min_gold_for_flags} gold labels), low agreement "
            f"(< {s.min_agreement:.0%} with the leave-one-out majority), inconsistent on re-shows "
            f"(< {s.min_self_consistency:.0%}); only with >= {s.min_labels_for_flags} labels. Thresholds: settings "
            "`[quality]`.")
        only_flagged = st.toggle("Only flagged annotators", key="agreement.only_flagged")
        shown = q[q["flags"] != ""] if only_flagged else q
        st.dataframe(
            shown.sort_values("labels", ascending=False), hide_index=True, width="stretch",
            column_config={
                "annotator_id": "Annotator", "labels": st.column_config.NumberColumn("Labels", format="%d"),
                "loo_compared": st.column_config.NumberColumn("Compared", format="%d",
                                                              help="Labels with a unique majority of the others"),
                "loo_agreement": st.column_config.NumberColumn("Agreement (LOO)", format="percent"),
                "gold_labels": st.column_config.NumberColumn("Gold", format="%d"),
                "gold_accuracy": st.column_config.NumberColumn("Gold accuracy", format="percent"),
                "labels_per_hour": st.column_config.NumberColumn("Labels/hour", format="%.1f"),
                "median_seconds": st.column_config.NumberColumn("Median s/label", format="%.1f"),
                "tie_rate": st.column_config.NumberColumn("Tie rate", format="percent"),
                "both_bad_rate": st.column_config.NumberColumn("Both bad", format="percent"),
                "sided_labels": st.column_config.NumberColumn("A/B with side", format="%d"),
                "left_share": st.column_config.NumberColumn("Left share", format="percent"),
                "left_pvalue": st.column_config.NumberColumn("p (left = 0.5)", format="%.2g"),
                "reshows": st.column_config.NumberColumn("Re-shows", format="%d"),
                "self_consistency": st.column_config.NumberColumn("Self-consistency", format="percent"),
                "ds_reliability": st.column_config.NumberColumn("Dawid-Skene reliability", format="%.2f"),
                "flags": st.column_config.TextColumn("Flags", width="medium"),
            },
        )
        _download(shown, "annotator_quality", "quality")

        st.subheader("Position bias")
        sided = q[q["sided_labels"] > 0].nlargest(30, "sided_labels")
        if sided.empty:
            st.info("No label in this selection records which list was on the left (imported labels often don't).")
        else:
            sided = sided.assign(biased=sided["left_pvalue"] < settings.quality.position_bias_alpha)
            bars = alt.Chart(sided).mark_bar().encode(
                x=alt.X("left_share:Q", title="Share of A/B choices for the LEFT list", scale=alt.Scale(domain=[0, 1]),
                        axis=alt.Axis(format="%")),
                y=alt.Y("annotator_id:N", sort="-x", title=None),
                color=alt.Color("biased:N", title=f"p < {settings.quality.position_bias_alpha:g}",
                                scale=alt.Scale(domain=[False, True], range=["#4c78a8", "#e45756"])),
                tooltip=["annotator_id", alt.Tooltip("left_share:Q", format=".1%"), "sided_labels:Q",
                         alt.Tooltip("left_pvalue:Q", format=".2g")],
            )
            rule = alt.Chart(pd.DataFrame({"x": [0.5]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
            st.altair_chart(bars + rule, width="stretch")
            st.caption("Exact two-sided binomial test of the left share against 0.5; the 30 annotators with "
                       "the most side-recorded A/B labels.")

        st.subheader("Drill-down: one annotator's labels")
        ordered = q.sort_values(["flags", "labels"], ascending=[False, False])["annotator_id"].tolist()
        who = st.selectbox("Annotator", ordered, key="agreement.drill",
                           help="Flagged annotators first. Shows each label beside the others' majority.")
        if who:
            mine = _drilldown(db_key, who, selection)
            st.dataframe(mine.fillna({"gold_choice": "", "loo_majority": "", "as_seen": ""}), hide_index=True,
                         width="stretch", column_config={
                "created_at": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD HH:mm"),
                "pair_id": "Pair",
                "as_seen": st.column_config.TextColumn(
                    "Answer as seen", help="As the annotator gave it: A is the list that was on their left."),
                "choice": st.column_config.TextColumn(
                    "Choice (pair's A/B)", help="In the pair's own terms, which sides swap between annotators: "
                    "what agreement, gold and training compare."),
                "strength": st.column_config.NumberColumn("Strength", format="%d"),
                "left_side": st.column_config.TextColumn("Pair's list on their left"),
                "is_reshow": st.column_config.CheckboxColumn("Re-show"),
                "loo_agrees": st.column_config.CheckboxColumn("Agrees with others"),
                "loo_majority": st.column_config.TextColumn(
                    "Others' majority", help="Empty where the others have no unique majority (or no label)."),
                "gold_choice": st.column_config.TextColumn("Gold", help="Empty unless the pair is gold."),
                "strategy": "Strategy", "round_id": "Round", "label_source": "Source",
                "flags": st.column_config.TextColumn(
                    "Item flags", help="Items they flagged, by the pair's own A/B and the item id."),
                "rationale": st.column_config.TextColumn("Rationale", width="large"),
                "time_ms": st.column_config.NumberColumn("ms", format="%d")})
            _download(mine, f"labels_{who}", "drill")
            with st.expander(f"Exclude {who}'s labels", icon=":material/person_remove:"):
                st.caption("For an annotator whose labels you do not trust (a spammer, a misunderstanding of the "
                           "guidelines): EVERY label they gave, in any round or date, stops counting in agreement, "
                           "aggregation, reward models and exports, and the pairs re-open for others. Nothing is "
                           "deleted; restore them below at any time.")
                deactivate = st.checkbox("Also deactivate the account, so that no new label arrives", value=True,
                                         key="agreement.exclude_deactivate")
                sure = st.checkbox(f"Yes, exclude every label of {who}", key=f"agreement.exclude_sure.{who}")
                st.button(f"Exclude {who}", type="primary", disabled=not sure or who == user.annotator_id,
                          on_click=_exclusion_action, key="agreement.exclude",
                          args=(partial(exclusion.exclude_annotator, store, who, by=user.annotator_id,
                                        deactivate=deactivate),),
                          icon=":material/person_remove:",
                          help="Your own labels cannot be excluded by you." if who == user.annotator_id else None)

    ui.one_shot_notice("agreement.notice", "success")  # what an exclusion or a restore did, where it was clicked
    try:
        excluded = exclusion.excluded_annotators(store)
    except StoreError as exc:
        excluded = {}
        st.error(f"The store cannot be read right now: {exc}")
    if excluded:
        st.subheader("Excluded annotators")
        st.dataframe(pd.DataFrame([{"annotator": row.annotator_id, "excluded labels": row.labels,
                                    "excluded by": row.excluded_by, "when (UTC)": row.excluded_at}
                                   for row in excluded.values()]), hide_index=True)
        back = st.selectbox("Restore", list(excluded), key="agreement.restore_who",
                            help="Their excluded labels count again (undone ones stay undone).")
        reactivate = st.checkbox("Also reactivate the account", key="agreement.restore_reactivate")
        st.button(f"Restore {back}'s labels", on_click=_exclusion_action, key="agreement.restore",
                  args=(partial(exclusion.restore_annotator, store, back, reactivate=reactivate),),
                  icon=":material/settings_backup_restore:")

# --------------------------------------------------------------------------------------- aggregation
with tab_agg:
    st.caption(
        "How several labels per pair become one training target. Majority vote (crowd-kit MajorityVote): "
        "confidence = the winner's vote share, 'contested' = a draw at the top. Dawid-Skene (crowd-kit): one "
        "confusion matrix per annotator, fitted by EM; confidence = posterior probability. With few labels per "
        "annotator the fit says little: its reliabilities can rank first someone whom gold and agreement rank "
        "last, so read them beside the Labels column. Gold answers are not "
        f"used by either, so 'gold accuracy' is an honest check. Training uses `{settings.reward_model.aggregation}` "
        "(settings `reward_model.aggregation`).")
    report = dash.aggregation_report
    if report.empty:
        st.info("No labels to aggregate in this selection.")
    else:
        st.dataframe(report, hide_index=True, width="stretch", column_config={**HEADERS,
            "mean_confidence": st.column_config.NumberColumn("Mean confidence", format="%.3f"), "gold_accuracy": st.column_config.NumberColumn("Gold accuracy", format="percent")})
        _download(report, "aggregation_methods", "aggreport")
        method = st.radio("Show pairs from", list(dash.aggregations), horizontal=True, key="agreement.aggmethod")
        result = dash.aggregations[method]
        st.dataframe(result.pairs.sort_values("confidence").head(2000), hide_index=True, width="stretch",
                     column_config={**HEADERS, "confidence": st.column_config.NumberColumn("Confidence", format="%.3f"),
                                    "scale_mean": st.column_config.NumberColumn("Mean on the 7-point scale",
                                                                                format="%.2f")})
        st.caption("Lowest-confidence pairs first (first 2,000 shown; the download has all). Under majority vote a "
                   "pair with one label has confidence 1: read confidence beside the Labels column.")
        _download(result.pairs, f"aggregated_pairs_{method}", "aggpairs")
        st.dataframe(result.reliability.sort_values("labels", ascending=False), hide_index=True, width="stretch",
                     column_config={**HEADERS, "agreement_with_aggregate": st.column_config.NumberColumn(
                         "Agrees with the aggregate", format="percent"),
                         "reliability": st.column_config.NumberColumn("Reliability", format="%.3f")})
        _download(result.reliability, f"annotator_reliability_{method}", "aggrel")

# ---------------------------------------------------------------------------------- throughput/queue
with tab_flow:
    st.subheader("Labels per day")
    tp = dash_service.throughput_for_chart(dash.throughput)
    if tp.empty:
        st.info("No labels in this selection.")
    else:
        chart = alt.Chart(tp).mark_bar().encode(
            # Days as bands (a time axis drew one day as a hairline); 20 colours for the 12 names and 'others'.
            x=alt.X("yearmonthdate(day):O", title="Day (UTC)"), y=alt.Y("labels:Q", title="Labels", stack=True),
            color=alt.Color("annotator:N", title="Annotator", scale=alt.Scale(scheme="tableau20")),
            tooltip=[alt.Tooltip("day:T"), "annotator:N", "labels:Q"],
        )
        st.altair_chart(chart, width="stretch")
        st.caption("The 12 busiest annotators by name, everyone else as 'others'.")
    st.dataframe(dash.throughput, hide_index=True, width="stretch",
                 column_config={**HEADERS,
                                "median_seconds": st.column_config.NumberColumn("Median s/label", format="%.1f")})
    _download(dash.throughput, "labels_per_day", "throughput")

    st.subheader("Queue")
    queue = dash.queue
    if queue.empty:
        st.info("There are no pairs in the store yet.")
    else:
        long = queue.melt(id_vars=["strategy", "round_id"],
                          value_vars=["complete", "waiting_for_overlap", "unlabelled", "gold_pairs"],
                          var_name="state", value_name="n").replace({"state": {"gold_pairs": "gold"}})
        long["group"] = long["strategy"] + " / " + long["round_id"]
        st.altair_chart(alt.Chart(long).mark_bar().encode(
            x=alt.X("n:Q", stack=True, title="Pairs"), y=alt.Y("group:N", title="Strategy / round"),
            color=alt.Color("state:N", title=None, scale=alt.Scale(
                domain=["complete", "waiting_for_overlap", "unlabelled", "gold"],
                range=["#54a24b", "#f58518", "#bab0ac", "#e6b800"])),
            tooltip=["strategy", "round_id", "state", "n"]), width="stretch")
        st.dataframe(queue, hide_index=True, width="stretch", column_config=HEADERS)
        st.caption(f"Complete = current labels reach the pair's overlap target (default {settings.queue.overlap_target}); "
                   "waiting = some labels but fewer; labels needed = what open pairs still need; being labelled "
                   "= leases live right now. Gold pairs are counted apart: every annotator gets them, so they are "
                   "never complete.")
        _download(queue, "queue", "queue")

    st.subheader("Skipped pairs")
    skipped = dash_service.skipped_pairs(store, selection)
    if skipped.empty:
        st.info("No pair was skipped in this selection.")
    else:
        st.dataframe(skipped, hide_index=True, width="stretch", column_config={
            **HEADERS, "closed_at": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD HH:mm"),
            "skip_reason": st.column_config.TextColumn("Reason", width="large")})
        st.caption("A skipped pair is never served to the annotator who skipped it; it goes to others. Many skips "
                   "of one round's pairs, or one reason again and again, point at the lists or the guidelines.")
        _download(skipped, "skipped_pairs", "skipped")

    st.subheader("Gold and re-show rates achieved")
    served = dash.served
    if served.empty:
        st.info("No labels in this selection.")
    else:
        totals = served[["labels", "gold_labels", "reshow_labels"]].sum()
        g = st.columns(2)
        g[0].metric("Gold rate", f"{totals['gold_labels'] / totals['labels']:.1%}",
                    help=f"Target {settings.queue.gold_rate:.0%} (settings queue.gold_rate)")
        g[1].metric("Re-show rate", f"{totals['reshow_labels'] / totals['labels']:.1%}",
                    help=f"Target {settings.queue.reshow_rate:.0%} (settings queue.reshow_rate)")
        st.caption(f"Targets: gold {settings.queue.gold_rate:.0%}, re-shows {settings.queue.reshow_rate:.0%} of served "
                   "items: labels on pairs the queue served as gold (not those given before a pair became gold, nor "
                   "imported ones, which were never served).")
        st.dataframe(served, hide_index=True, width="stretch", column_config=HEADERS)
        _download(served, "gold_and_reshow_rates", "served")

    st.subheader("Gold pairs")
    ui.one_shot_notice("agreement.gold.notice", "success")
    golds = gold_service.gold_pairs(store)
    if golds:
        gold_table = pd.DataFrame([vars(g) for g in golds]).fillna({"note": "", "created_by": "an import"})
        gold_table["answer"] = gold_table["answer"].map(GOLD_CHOICES)
        st.dataframe(gold_table, hide_index=True, width="stretch", column_config={**HEADERS, "note": "Note",
            "answer": "Answer", "agreeing": "Labels agreeing", "created_by": "By",
            "created_at": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD HH:mm")})
        _download(gold_table, "gold_pairs", "gold")
    else:
        st.info("No gold pairs yet. Review a pair below and give it its answer; the queue then mixes it into "
                f"annotators' work ({settings.queue.gold_rate:.0%} of served pairs, queue.gold_rate).")
    _gold_form()

# ------------------------------------------------------------------------------------- round quality
with tab_rounds:
    rq = dash.rounds
    if rq.empty:
        st.info("No training rounds have run yet. After a round, its reward model's held-out accuracy, its "
                "agreement with annotators and the new policy's win rate over its predecessor appear here.")
    else:
        st.dataframe(ui.with_verdicts_said(rq), hide_index=True, width="stretch", column_config={**HEADERS,
            "parent_policy_id": st.column_config.TextColumn(
                "Started from", help="The policy the round continued from: the newest round's, or an earlier one "
                "an engineer chose to roll back to."),
            "ndcg_vs_zero_shot": st.column_config.TextColumn(
                "NDCG vs zero-shot, paired", help="Did the round's policy recommend better than the model the "
                "loop started from? Its held-out NDCG minus the zero-shot model's over the same shoppers, with "
                "the 95% interval: 'better' only when the interval lies above zero."),
            "reasons_vs_zero_shot": st.column_config.TextColumn(
                "Reasons vs zero-shot, paired", help="Its share of reasons about the item or the shopper's earlier "
                "purchases minus the zero-shot model's, over the same shoppers, with the 95% interval."),
            "rm_heldout_accuracy": st.column_config.NumberColumn("RM held-out accuracy", format="percent"),
            "rm_heldout_accuracy_unselected": st.column_config.NumberColumn(
                "RM accuracy, pairs no model chose", format="percent", help="Held-out accuracy on the pairs "
                "chosen without a model. A reward model is less accurate on the pairs its predecessor found "
                "close, so the accuracy over all held-out pairs drifts down as rounds add them; this one does "
                "not."),
            "rm_gold_accuracy": st.column_config.NumberColumn("RM gold accuracy", format="percent"),
            "rm_human_agreement": st.column_config.NumberColumn("RM agreement with annotators", format="percent"),
            "rm_win_rate": st.column_config.NumberColumn("RM win rate vs previous", format="percent"),
            "rm_win_rate_vs_zero_shot": st.column_config.NumberColumn("RM win rate vs zero-shot", format="percent"),
            "human_win_rate": st.column_config.TextColumn(
                "Human win rate vs previous", help="Labels preferring the round's policy to its "
                "parent, on pairs no model chose: the round's human-evaluation pairs (held-out shoppers), its "
                "random slice and pairs made with `pairs make`."),
            "human_win_interval": st.column_config.TextColumn("95% interval"),
            "human_win_labels": st.column_config.NumberColumn("Human labels", format="%d"),
            "human_win_pairs": st.column_config.NumberColumn("Pairs", format="%d")})
        st.caption("Human win rate: labels on pairs of the round's policy against its parent preferring the new "
                   "policy (ties count one half), on pairs chosen without a model: the round's human-evaluation "
                   "pairs (`rounds.human_eval_pairs`, on held-out shoppers), its random slice and pairs made with "
                   "`recfeedback pairs make --strategy new_vs_previous`. The pairs a round chose "
                   "because its reward model found them close are left out: they pull the rate towards 50%, the "
                   "more the better the reward model. RM agreement: mean over annotators of the share of their "
                   "held-out A/B labels the reward model agrees with.")
        # The legend speaks the table's words, not column names.
        measures = {"human_win_rate": "Human win rate vs previous", "rm_heldout_accuracy": "RM held-out accuracy",
                    "rm_heldout_accuracy_unselected": "RM accuracy, pairs no model chose",
                    "rm_human_agreement": "RM agreement with annotators", "rm_win_rate": "RM win rate vs previous",
                    "rm_win_rate_vs_zero_shot": "RM win rate vs zero-shot"}
        long = rq.melt(id_vars=["round_id", "created_at"], value_vars=list(measures), var_name="measure",
                       value_name="value").dropna(subset=["value"])
        if not long.empty:
            long["measure"] = long["measure"].map(measures)
            st.altair_chart(alt.Chart(long).mark_line(point=True).encode(
                x=alt.X("created_at:T", title="Round started", axis=alt.Axis(format="%b %d %H:%M")),
                y=alt.Y("value:Q", title=None, axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
                color=alt.Color("measure:N", title=None, legend=alt.Legend(labelLimit=300)),
                tooltip=["round_id", "measure", alt.Tooltip("value:Q", format=".1%")]),
                width="stretch")
        _download(rq, "round_quality", "rounds")

with st.expander("Timings"):
    st.write({k: round(v, 3) for k, v in dash.timings.items()})
