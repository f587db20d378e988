"""Training rounds end to end on a small demo store with tiny models (real tokenizer, TRL, PEFT, DuckDB).

Setup (once per module): a small demo shop, a tiny 2-layer Llama with SmolLM2's real tokenizer as the
policy AND the reward-model backbone, a first queue sampled by that policy, and labels from a simulated
crowd submitted through :mod:`rlhf.annotation`. Each test works on its own copy of that data folder.

- (a) a round runs to the end; its pairs are in the queue, made of the NEW policy's lists, and an
  annotator is served one of them;
- (b) a round run as a separate process and SIGKILLed during PPO leaves every data table exactly as it
  was (row counts and content hashes), shows as interrupted, and ``resume`` finishes it;
- (c) too few labels: a clear refusal, and nothing written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from round_support import build_labelled_store, labelled_base, tiny_model, tiny_settings  # noqa: F401

from rlhf.settings import load_settings
from storage import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir(labelled_base, tiny_model, tmp_path):  # noqa: F811
    """A private copy of the labelled data folder and its settings."""
    data = tmp_path / "data"
    shutil.copytree(labelled_base, data)
    settings = tiny_settings(data, tiny_model)
    return settings, Store.from_settings(settings)


def data_fingerprint(store: Store) -> dict[str, tuple[int, str]]:
    """(row count, content hash) of every data table a round may ingest into."""
    from storage import generations as gen_repo
    from storage import queue as queue_repo
    from storage import reward_models as rm_repo
    from storage import rounds as rounds_repo

    def digest(rows) -> tuple[int, str]:
        text = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
        return len(text), hashlib.sha256("\n".join(text).encode()).hexdigest()

    with store.transaction() as con:
        policies = gen_repo.list_policies(con)
        return {
            "labels": digest(vars(x) for x in queue_repo.current_labels(con)),
            "pairs": digest(vars(x) for x in gen_repo.list_pairs(con, source=None)),
            "generations": digest(vars(x) for x in gen_repo.generations_for_policies(
                con, [p.policy_id for p in policies])),
            "policies": digest(vars(x) for x in policies),
            "reward_models": digest(vars(x) for x in rm_repo.list_reward_models(con)),
            "training_metrics": digest(rounds_repo.training_metrics_frame(con).to_dict(orient="records")),
            "evaluations": digest(rounds_repo.list_evaluations(con)),
        }


def ui_esc(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def render_training_page(store: Store, settings, username: str, monkeypatch):
    """The Training page as ``username`` (Streamlit AppTest, no browser)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from rlhf.settings import get_settings
    from storage.users import get_annotator

    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    st.cache_resource.clear()
    st.cache_data.clear()
    with store.transaction() as con:
        user = get_annotator(con, username)
    at = AppTest.from_file(str(ROOT / "annotate_app" / "Home.py"), default_timeout=60)
    at.session_state["auth.user"] = user
    at.run()
    at.switch_page("views/training.py").run()
    get_settings.cache_clear()
    return at


def test_a_round_runs_end_to_end_and_its_pairs_reach_annotators(workdir, monkeypatch, caplog):
    from rlhf import annotation
    from rlhf.rounds import STAGES, run_round, usable_label_count
    from storage import generations as gen_repo
    from storage import rounds as rounds_repo

    caplog.set_level(logging.INFO)  # as a round's process logs
    settings, store = workdir
    from storage import contexts as contexts_repo

    with store.transaction() as con:  # a held-out shopper who never came back, first in id order
        held = sorted((c for c in contexts_repo.list_contexts(con) if c.split == "heldout"), key=lambda c: c.context_id)
        gone = dataclasses.replace(held[0], context_id="ctx_00_gone", shopper_id="gone")
        contexts_repo.insert_contexts(con, [gone])
    before = data_fingerprint(store)
    usable = usable_label_count(store)
    record = run_round(store, settings, progress=False)

    assert record.status == "done", record.error
    # The log follows PPO step by step: a background round has no progress bar to show it.
    assert f"PPO step {settings.ppo.steps}/{settings.ppo.steps}: reward " in (Path(record.folder) / "round.log").read_text()
    assert record.metrics["usable_labels"] == usable  # what it trained on, kept beside what it measured
    assert record.stage == "done"
    assert set(record.timings) == set(STAGES)
    assert record.policy_id and record.reward_model_id
    with store.transaction() as con:
        policy = gen_repo.get_policy(con, record.policy_id)
        pairs = [p for p in gen_repo.list_pairs(con) if p.round_id == record.round_id]
        gens = gen_repo.get_generations(con, [g for p in pairs for g in (p.gen_a, p.gen_b)])
        metrics = rounds_repo.training_metrics_frame(con, run_kind="ppo")
        evals = rounds_repo.list_evaluations(con, round_id=record.round_id)
    assert policy.round_id == record.round_id and policy.parent_id
    assert (Path(policy.adapter_path) / "adapter_config.json").is_file()
    active_pairs = [p for p in pairs if p.strategy == "active"]
    human_eval = [p for p in pairs if p.strategy == "new_vs_previous"]
    assert 0 < len(active_pairs) <= settings.rounds.new_pairs and len(active_pairs) + len(human_eval) == len(pairs)
    for p in pairs:  # every new pair compares at least one list of the NEW policy, same context
        sides = [gens[p.gen_a], gens[p.gen_b]]
        assert record.policy_id in {g.policy_id for g in sides}
        assert {g.context_id for g in sides} == {p.context_id}
        assert p.priority >= settings.rounds.priority_offset
        assert all(g.sampling["prompt_sha1"] and g.round_id == record.round_id for g in sides
                   if g.policy_id == record.policy_id)
    assert sorted(metrics["step"].tolist()) == list(range(1, settings.ppo.steps + 1))
    assert evals and evals[0]["metrics"]["headline"]["policy"] == record.policy_id
    # The held-out contexts the snapshot chose (shoppers with later purchases first) are the ones evaluated.
    from rlhf.evaluation import evaluation_context_ids

    chosen = json.loads((Path(record.folder) / "stages" / "snapshot.json").read_text())["eval_contexts"]
    assert chosen == evaluation_context_ids(store, settings) and chosen and "ctx_00_gone" not in chosen
    # Beside its own pairs, the round asks annotators to compare its lists with its parent's for held-out
    # shoppers it evaluated: pairs no model chose, for the human win rate (their labels never train).
    assert 0 < len(human_eval) <= min(len(chosen), settings.rounds.human_eval_pairs)
    assert {p.context_id for p in human_eval} <= set(chosen)
    assert all({gens[p.gen_a].policy_id, gens[p.gen_b].policy_id} == {record.policy_id, record.parent_policy_id}
               for p in human_eval)
    assert record.metrics["human_eval_pairs"] == len(human_eval)
    new_row = next(r for r in evals[0]["metrics"]["table"] if r["policy"] == record.policy_id)
    assert new_row["contexts"] == len(chosen)
    with store.transaction() as con:
        held_ids = {c.context_id for c in contexts_repo.list_contexts(con, split="heldout")}
        sampled = {g.context_id for g in gen_repo.generations_for_policies(con, [record.policy_id])}
    assert sampled & held_ids == set(chosen)
    assert record.metrics["pairs_enqueued"] == len(pairs)
    after = data_fingerprint(store)
    assert after["labels"] == before["labels"]  # a round never touches labels
    assert after["reward_models"][0] == before["reward_models"][0] + 1
    from rlhf.reward.registry import get_record

    # A round's few labels train the small-data probe ('auto'), registered like any reward model.
    assert get_record(store, record.reward_model_id).card["training"]["method"] == "probe"

    # A fresh annotator is served one of the round's pairs first (they carry the highest priority).
    from rlhf.auth import create_user

    create_user(store, "fresh_annotator", "a-long-password-1", "annotator")
    task = annotation.next_task(store, "fresh_annotator", settings=settings)
    assert task is not None
    assert task.pair_id in {p.pair_id for p in pairs}
    served = next(p for p in pairs if p.pair_id == task.pair_id)
    shown = {tuple(i.item_id for i in task.left.items), tuple(i.item_id for i in task.right.items)}
    assert shown == {tuple(i.item_id for i in gens[g].items) for g in (served.gen_a, served.gen_b)}

    # Annotators judge the human-evaluation pairs: the page says how often they prefer the new policy.
    from rlhf.human_eval import human_win_in_words, human_win_rates
    from storage import queue as queue_repo
    from storage.records import Label

    with store.transaction() as con:
        queue_repo.import_labels(con, [
            Label(f"lab_eval_{k}", p.pair_id, "fresh_annotator", "A" if gens[p.gen_a].policy_id == record.policy_id
                  else "B", strength=2, left_side="A") for k, p in enumerate(human_eval)])
    said = human_win_in_words(*human_win_rates(store)[record.round_id])
    assert said and said.startswith("100%")
    # The Training page lists the round, its metrics and the registry for an engineer; refuses annotators.
    create_user(store, "eng", "a-long-password-2", "engineer")
    at = render_training_page(store, settings, "eng", monkeypatch)
    assert not at.exception, at.exception
    tables = "\n".join(str(df.value) for df in at.dataframe)
    assert record.round_id in tables and record.reward_model_id in tables and record.policy_id in tables
    assert any("human_win" in df.value.columns and (df.value["human_win"] == said).any() for df in at.dataframe)
    shown = "\n".join(df.value.to_csv() for df in at.dataframe)
    assert "baseline:popularity" in shown and "parent (zero-shot)" in shown  # the round's held-out report
    # Two held-out shoppers: the page says that its verdict cannot see much, and what decides how many.
    assert any(c.value.startswith(f"On {len(chosen)} shoppers the intervals are wide") for c in at.caption)
    # How many reasons are about the item or the shopper: a share for each LLM row, none for baselines, and
    # the new policy's against its parent's in words.
    from rlhf.rounds import round_evaluation

    report_table = round_evaluation(store, record.round_id).set_index("role")
    assert 0 <= report_table.loc["new policy", "reasons_grounded"] <= 1
    assert report_table.loc["parent (zero-shot)", "reasons_verdict"].split(":")[0] in (
        "better", "worse", "no detectable difference")
    assert report_table.loc["baseline", "reasons_grounded"].isna().all()
    assert "reasons_verdict" in shown
    # Past rounds: NDCG under the round's own list length (2 here; the app's settings say 5).
    past = next(df.value for df in at.dataframe if "round_id" in df.value.columns and "status" in df.value.columns)
    assert past.loc[0, f"ndcg@{settings.generation.list_length}"] == record.metrics[f"ndcg@{settings.generation.list_length}"]
    assert [b for b in at.button if b.label == "Start a round"]
    # The reward model's accuracy comes with the number of held-out pairs it was measured on, on the page
    # (past rounds and registry) and in `recfeedback round list`.
    n_held = get_record(store, record.reward_model_id).metrics["heldout"]["n"]
    assert n_held == record.metrics["rm_counts"]["examples_heldout"]
    assert past.loc[0, "rm_heldout_pairs"] == n_held
    registry = next(df.value for df in at.dataframe if "heldout_pairs" in df.value.columns)
    assert registry.set_index("rm_id").loc[record.reward_model_id, "heldout_pairs"] == n_held
    # Its accuracy on the held-out pairs no model chose: all of them in a first round (bootstrap pairs).
    assert past.loc[0, "rm_heldout_unselected_pairs"] == n_held == record.metrics["rm_heldout_unselected_pairs"]
    assert past.loc[0, "rm_heldout_accuracy_unselected"] == pytest.approx(record.metrics["rm_heldout_accuracy"])
    assert registry.set_index("rm_id").loc[record.reward_model_id, "heldout_unselected_pairs"] == n_held
    from typer.testing import CliRunner

    from rlhf.cli import app

    listed = CliRunner().invoke(app, ["round", "list", "--data-dir", str(settings.store.data_dir)])
    assert listed.exit_code == 0, listed.output
    assert f"{record.round_id}  done" in listed.output and f" ({n_held} held-out pair" in listed.output
    # Which policy it continued from, beside the one it made (rounds can start from an earlier one).
    assert f"policy={record.policy_id} (from {record.parent_policy_id})" in listed.output
    assert past.loc[0, "parent_policy_id"] == record.parent_policy_id
    # Against the zero-shot model (round 1's parent) the round gets a verdict in words from the paired
    # interval, with the interval, on the page's past rounds and in `round list`.
    with store.transaction() as con:
        report = rounds_repo.list_evaluations(con, round_id=record.round_id)[-1]["metrics"]
    est = report["ndcg_difference"][report["zero_shot_policy_id"]]
    word = "better" if est["lo"] > 0 else "worse" if est["hi"] < 0 else "no detectable difference"
    verdict = f"{word}: {est['mean']:+.3f} [{est['lo']:+.3f}, {est['hi']:+.3f}] over {est['n']} shoppers"
    assert past.loc[0, "ndcg_vs_zero_shot"] == verdict
    # The policy registry on the page is `policy list`'s: the round's policy with its lists and that verdict.
    policies = next(df.value for df in at.dataframe if "adapter_path" in df.value.columns).set_index("policy_id")
    assert policies.loc[record.policy_id, "verdict"] == verdict and policies.loc[record.policy_id, "n_lists"] > 0
    assert f"NDCG vs zero-shot, paired: {verdict}" in listed.output
    # ... and its reasons, the same way (worked out here from the stored estimate).
    est = report["reasons_difference"][report["zero_shot_policy_id"]]
    word = "better" if est["lo"] > 0 else "worse" if est["hi"] < 0 else "no detectable difference"
    reasons = f"{word}: {est['mean']:+.3f} [{est['lo']:+.3f}, {est['hi']:+.3f}] over {est['n']} shoppers"
    assert past.loc[0, "reasons_vs_zero_shot"] == reasons
    assert f"reasons grounded vs zero-shot, paired: {reasons}" in listed.output
    shown = CliRunner().invoke(app, ["round", "status", record.round_id, "--data-dir", str(settings.store.data_dir)])
    assert shown.exit_code == 0 and f"NDCG vs zero-shot, paired: {verdict}" in shown.output, shown.output
    assert f"reasons grounded vs zero-shot, paired: {reasons}" in shown.output
    # Its lists beside its parent's for the held-out shoppers, with the round's policy first and every item
    # the policy listed shown with its reason.
    from rlhf.side_by_side import round_side_by_side

    side = round_side_by_side(store, settings, record.round_id)
    assert side and [c.role for c in side[0].columns] == ["new policy", "parent (zero-shot)"]
    assert [e for e in at.expander if e.label.startswith("Lists side by side")]
    # The first round has no round before it: its settings are listed, with nothing to compare.
    (panel,) = [e for e in at.expander if e.label.startswith("Settings")]
    assert panel.label == "Settings this round ran with (the first round)"
    assert list(panel.dataframe[0].value.columns) == ["setting", "this round"]
    pages = "\n".join(h.proto.body for h in at.get("html"))
    for item in side[0].columns[0].shown.items:
        assert ui_esc(item.reason) in pages
    # The page gives the command that exports the round's policy, and the export is a plain model that
    # computes what the round's base + adapter computes.
    assert any(f"recfeedback policy export {record.policy_id} --out" in c.value for c in at.code)
    from rlhf import runtime
    from rlhf.settings import get_settings

    out = settings.store.data_dir.parent / "exported"
    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(settings.store.data_dir))
    get_settings.cache_clear()
    runtime._open_store.cache_clear()
    exported = CliRunner().invoke(app, ["policy", "export", record.policy_id, "--out", str(out)])
    get_settings.cache_clear()
    runtime._open_store.cache_clear()
    assert exported.exit_code == 0, exported.output
    import torch
    from transformers import AutoModelForCausalLM

    from rlhf.models import load_policy

    served = AutoModelForCausalLM.from_pretrained(out)
    trained, _ = load_policy(policy.base_model, policy.adapter_path, dtype="float32", merge=False)
    ids = torch.tensor([[1, 400, 500, 600]])
    with torch.inference_mode():
        assert torch.allclose(served(ids).logits, trained(ids).logits, atol=1e-4)
    # The round's PPO curves: one panel per metric under its readable title, three to a row of fixed
    # width (a free-width row of three overflowed the page).
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    specs = [(json.loads(e.proto.spec), e.proto) for e in at.get("vega_lite_chart")]
    curves = [chart for spec, chart in specs if "facet" in spec and spec["spec"]["encoding"]["x"]["field"] == "step"]
    assert curves, "no PPO curve chart on the Training page"
    for chart in curves:
        spec = json.loads(chart.spec)
        assert spec.get("columns") == 3 and spec["spec"].get("width", 10**6) <= 240
        assert spec["spec"]["encoding"]["x"]["axis"]["tickMinStep"] == 1  # whole steps only
        titles = set(convert_arrow_bytes_to_pandas_df(chart.datasets[0].data.data)["metric"])
        assert "KL to the reference" in titles
        assert titles <= {"Reward (RM score + structure)", "KL to the reference", "Validity of sampled lists"}
    # Past rounds: the NDCG panel draws the zero-shot model's NDCG beside the round's, the bar to clear.
    past = [chart for spec, chart in specs if "facet" in spec and spec["spec"]["encoding"]["x"]["field"] == "round"]
    (history,) = past
    drawn = convert_arrow_bytes_to_pandas_df(history.datasets[0].data.data)
    ndcg = drawn[drawn["metric"].str.startswith("NDCG@")]
    assert set(ndcg["policy"]) == {"the round's", "zero-shot"}, ndcg
    at = render_training_page(store, settings, "fresh_annotator", monkeypatch)
    assert any("Access denied" in e.value for e in at.error)


def test_a_second_round_is_judged_against_its_parent_and_the_zero_shot_policy(workdir, monkeypatch):
    """Round 2's evaluation compares its policy with round 1's AND the zero-shot base model on the same
    held-out contexts (the loop's progress so far, not only its last step), reusing the zero-shot lists
    round 1 sampled; those lists never become new pairs."""
    from rlhf.generate import default_policy_id
    from rlhf.rounds import run_round
    from storage import generations as gen_repo
    from storage import rounds as rounds_repo

    settings, store = workdir
    zero = default_policy_id(settings.model.policy)
    first = run_round(store, settings, progress=False)
    # Round 2 samples every training context, so its pool includes the zero-shot queue's contexts, and
    # enqueues every candidate pair, so a zero-shot list among the candidates would show in the queue.
    wide = settings.model_copy(update={"rounds": settings.rounds.model_copy(
        update={"contexts_per_round": 1000, "new_pairs": 1000})})
    second = run_round(store, wide, progress=False)
    assert first.status == second.status == "done", (first.error, second.error)
    assert second.parent_policy_id == first.policy_id != zero

    with store.transaction() as con:
        report = rounds_repo.list_evaluations(con, round_id=second.round_id)[0]["metrics"]
        pairs = [p for p in gen_repo.list_pairs(con) if p.round_id == second.round_id]
        gens = gen_repo.get_generations(con, [g for p in pairs for g in (p.gen_a, p.gen_b)])
    table = {row["policy"]: row for row in report["table"]}
    assert {second.policy_id, first.policy_id, zero} <= set(table)
    assert table[zero]["contexts"] == table[second.policy_id]["contexts"] > 0  # the same held-out contexts
    assert report["zero_shot_policy_id"] == zero
    assert 0.0 <= report["rm_win_rate_vs_zero_shot"]["mean"] <= 1.0 and report["rm_win_rate_vs_zero_shot"]["n"] > 0
    assert second.metrics["rm_win_rate_vs_zero_shot"] == report["rm_win_rate_vs_zero_shot"]["mean"]
    assert second.metrics[f"zero_shot_ndcg@{settings.generation.list_length}"] == \
        table[zero][f"ndcg@{settings.generation.list_length}"]
    # Round 1 compared with the zero-shot policy directly: both win rates are the same estimate.
    assert first.metrics["rm_win_rate_vs_zero_shot"] == first.metrics["rm_win_rate"] is not None
    from rlhf.rounds import round_evaluation

    shown = round_evaluation(store, second.round_id).set_index("policy")["role"].to_dict()
    assert {k: v for k, v in shown.items() if v != "baseline"} == {
        second.policy_id: "new policy", first.policy_id: "parent", zero: "zero-shot"}
    assert {k for k, v in shown.items() if v == "baseline"} == {"baseline:popularity", "baseline:copurchase",
                                                                  "baseline:random-candidates"}
    assert round_evaluation(store, "round_missing").empty
    # The new policy's NDCG minus its parent's and the zero-shot model's, paired over the same shoppers:
    # on the same contexts the paired mean is the difference of the table's means.
    n = settings.generation.list_length
    baselines = {"baseline:popularity", "baseline:copurchase", "baseline:random-candidates"}
    assert set(report["ndcg_difference"]) == {first.policy_id, zero, *baselines}
    paired = round_evaluation(store, second.round_id).set_index("policy")
    for other in (first.policy_id, zero, *baselines):
        assert report["ndcg_difference"][other]["mean"] == pytest.approx(
            table[second.policy_id][f"ndcg@{n}"] - table[other][f"ndcg@{n}"])
        assert paired.loc[other, "paired_diff"] == pytest.approx(report["ndcg_difference"][other]["mean"])
        assert (paired.loc[other, "paired_lo"], paired.loc[other, "paired_hi"]) == pytest.approx(
            (report["ndcg_difference"][other]["lo"], report["ndcg_difference"][other]["hi"]))
    assert paired.loc[zero, "verdict"] in {"better", "worse", "no detectable difference"}
    generated = json.loads((Path(second.folder) / "stages" / "generate.json").read_text())
    assert generated["comparison_lists_generated"] == {}  # round 1's zero-shot lists were reused
    assert pairs and all(g.policy_id != zero for g in gens.values())

    # The newest round's pairs are served before round 1's unlabelled leftovers, whatever their rank within
    # their own round: every round-2 priority is above every round-1 priority.
    from rlhf import annotation
    from rlhf.auth import create_user

    with store.transaction() as con:
        earlier = [p.priority for p in gen_repo.list_pairs(con) if p.round_id == first.round_id]
    assert earlier and min(p.priority for p in pairs) > max(earlier)
    create_user(store, "fresh_annotator", "a-long-password-1", "annotator")
    task = annotation.next_task(store, "fresh_annotator", settings=settings)
    assert task is not None and task.pair_id in {p.pair_id for p in pairs}

    # What round 2 ran with beside round 1: the two sizes changed above and nothing else, on every surface.
    from typer.testing import CliRunner

    from rlhf.cli import app
    from rlhf.rounds import round_settings
    from storage import NotFoundError

    recorded = round_settings(store, second.round_id)
    assert recorded.previous_round_id == first.round_id and recorded.recorded and recorded.previous_recorded
    assert [(c.setting, c.previous, c.value) for c in recorded.changes] == [
        ("rounds.contexts_per_round", settings.rounds.contexts_per_round, 1000),
        ("rounds.new_pairs", settings.rounds.new_pairs, 1000)]
    values = {v.setting: v.value for v in recorded.values}
    assert values["ppo.steps"] == settings.ppo.steps and values["model.policy"] == settings.model.policy
    assert values["reward_model.method"] == settings.reward_model.method
    assert {v.setting.split(".")[0] for v in recorded.values} == {"model", "generation", "reward_model", "ppo",
                                                                   "rounds"}
    assert not any(v.setting.startswith("rounds.quick") for v in recorded.values)
    assert round_settings(store, first.round_id).previous_round_id is None
    assert round_settings(store, first.round_id).changes == []
    with pytest.raises(NotFoundError):
        round_settings(store, "round_missing")
    where = ["--data-dir", str(settings.store.data_dir)]
    shown = CliRunner().invoke(app, ["round", "status", second.round_id, *where])
    assert shown.exit_code == 0, shown.output
    changes = (f"rounds.contexts_per_round {settings.rounds.contexts_per_round} -> 1000; "
               f"rounds.new_pairs {settings.rounds.new_pairs} -> 1000")
    assert f"settings changed since {first.round_id}: {changes}" in shown.output
    listed_rounds = CliRunner().invoke(app, ["round", "list", *where])
    assert listed_rounds.exit_code == 0 and listed_rounds.output.count("settings changed:") == 1
    assert f"settings changed: {changes}" in listed_rounds.output
    full = CliRunner().invoke(app, ["round", "status", second.round_id, "--settings", "--json", *where])
    assert full.exit_code == 0, full.output
    listed = {v["setting"]: v for v in json.loads(full.output)["settings"]}
    assert listed["rounds.new_pairs"] == {"setting": "rounds.new_pairs", "value": 1000,
                                          "previous": settings.rounds.new_pairs, "changed": True}
    assert listed["ppo.steps"]["changed"] is False and len(listed) == len(recorded.values)
    # The Training page shows the newest round's details: its settings, the two changes first.
    create_user(store, "eng", "a-long-password-2", "engineer")
    at = render_training_page(store, settings, "eng", monkeypatch)
    assert not at.exception, at.exception
    (panel,) = [e for e in at.expander if e.label.startswith("Settings")]
    assert panel.label == f"Settings: 2 differ from the round before ({first.round_id})"
    shown_frame = panel.dataframe[0].value
    assert shown_frame["setting"].tolist()[:2] == ["rounds.contexts_per_round", "rounds.new_pairs"]
    assert shown_frame["changed"].tolist() == [True, True] + [False] * (len(shown_frame) - 2)
    assert shown_frame.set_index("setting").loc["rounds.new_pairs", "this round"] == "1000"
    at.toggle(key="training.settings_changes_only").set_value(True).run()
    (panel,) = [e for e in at.expander if e.label.startswith("Settings")]
    assert panel.dataframe[0].value["setting"].tolist() == ["rounds.contexts_per_round", "rounds.new_pairs"]
    past = next(df.value for df in at.dataframe if "settings_changed" in df.value.columns)
    said = past.set_index("round_id")["settings_changed"]  # round 1 has no round before it: an empty cell
    assert said.isna()[first.round_id] and said[second.round_id] == changes
    # A round run before a setting existed lacks it: "not recorded", unlike a setting that is recorded unset.
    from rlhf.rounds import NOT_RECORDED

    older = Path(first.folder) / "settings.json"
    data = json.loads(older.read_text())
    del data["ppo"]["own_reasons_count_copies"]
    older.write_text(json.dumps(data))
    values = {v.setting: v for v in round_settings(store, second.round_id).values}
    assert values["ppo.own_reasons_count_copies"].previous == NOT_RECORDED
    assert values["ppo.own_reasons_count_copies"].changed
    assert values["model.tokenizer"].value is values["model.tokenizer"].previous is None
    assert not values["model.tokenizer"].changed
    assert values["model.tokenizer"].said() == "model.tokenizer none -> none"


def test_a_lora_reward_model_stage_counts_optimizer_steps_over_all_its_models(workdir, monkeypatch):
    """So that a Full round's reward model (TRL + LoRA, hours on a CPU) shows its time left, not '0/3'."""
    from rlhf.rounds import RoundContext, create_round, execute

    settings, store = workdir
    lora = settings.model_copy(update={"reward_model": settings.reward_model.model_copy(update={"method": "lora"}),
                                       "rounds": settings.rounds.model_copy(update={"ensemble_size": 2})})
    calls: list[tuple[str, int | None, int | None]] = []
    original = RoundContext.set_progress

    def recorded(self, stage, step=None, total=None, **extra):
        calls.append((stage, step, total))
        original(self, stage, step, total, **extra)

    monkeypatch.setattr(RoundContext, "set_progress", recorded)
    record = create_round(store, lora)
    execute(store, record.round_id, progress=False, stop_after="reward_model")
    counted = [(step, total) for stage, step, total in calls if stage == "reward_model" and step is not None]
    assert counted[0] == (0, 2)  # two models to train; no step counted yet
    total = counted[-1][1]
    assert total >= 2 and total % 2 == 0  # as many steps for the bootstrap member as for the round's model
    assert counted[1:] == [(step, total) for step in range(1, total + 1)]


def test_round_cancel_without_an_id_stops_the_running_round(workdir):
    from typer.testing import CliRunner

    from rlhf import rounds
    from rlhf.cli import app

    settings, store = workdir
    child = subprocess.Popen(["sleep", "120"])  # stands in for the round's process
    try:
        record = rounds.create_round(store, settings, pid=child.pid)
        where = ["--data-dir", str(settings.store.data_dir), "--grace", "0.1"]
        stopped = CliRunner().invoke(app, ["round", "cancel", *where])
        assert stopped.exit_code == 0, stopped.output
        assert f"Round {record.round_id} is cancelled" in stopped.output
        assert rounds.round_status(store, record.round_id)["status"] == "cancelled"
        child.wait(timeout=10)  # the process was stopped, not just the row
        again = CliRunner().invoke(app, ["round", "cancel", *where])
        assert again.exit_code == 1 and "No round is running" in again.output
    finally:
        child.kill()
        child.wait()


def test_a_cancel_and_the_rounds_ingest_agree_on_who_came_first(workdir, monkeypatch):
    """A cancel that commits before the round's ingest leaves the store unchanged (the ingest refuses); an
    ingest that commits first makes the cancel fail, so no done round is ever shown as cancelled."""
    from rlhf import rounds
    from rlhf.errors import RoundError
    from rlhf.rounds import runner

    settings, store = workdir
    record = rounds.create_round(store, settings)
    rounds.execute(store, record.round_id, progress=False, stop_after="generate")
    before = data_fingerprint(store)
    # The cancel commits while a stage runs, its SIGTERM not yet there: the next stage does not start.
    select = runner.STAGE_FUNCS["select"]

    def select_then_cancelled(ctx):
        out = select(ctx)
        rounds.cancel_round(store, ctx.round_id)  # its pid is this process: nothing to signal
        return out

    monkeypatch.setitem(runner.STAGE_FUNCS, "select", select_then_cancelled)
    with pytest.raises(rounds.RoundCancelled, match="cancelled before its stage enqueue"):
        rounds.execute(store, record.round_id, progress=False)
    monkeypatch.setitem(runner.STAGE_FUNCS, "select", select)
    assert data_fingerprint(store) == before
    assert rounds.round_status(store, record.round_id)["status"] == "cancelled"
    # The cancel commits after the ingest stage started: its unit of work refuses.
    ctx = rounds.RoundContext(record.round_id, settings, store, rounds.RoundPaths(Path(record.folder)))
    with pytest.raises(rounds.RoundCancelled, match="cancelled before its outputs were ingested"):
        rounds.stage_enqueue(ctx)
    assert data_fingerprint(store) == before
    assert rounds.round_status(store, record.round_id)["status"] == "cancelled"

    # The other order: the cancel read the round running, then the round's ingest committed.
    rounds.prepare_resume(store, record.round_id)
    read = runner._get_row

    def read_then_ingest(store, round_id):
        row = read(store, round_id)
        rounds.stage_enqueue(ctx)  # commits 'done' between the cancel's read and its update
        return row

    monkeypatch.setattr(runner, "_get_row", read_then_ingest)
    with pytest.raises(RoundError, match="already done: it finished before it could be cancelled"):
        rounds.cancel_round(store, record.round_id)
    monkeypatch.setattr(runner, "_get_row", read)
    assert rounds.round_status(store, record.round_id)["status"] == "done"
    assert data_fingerprint(store)["pairs"] != before["pairs"]  # its pairs reached the queue


def test_round_status_watch_follows_a_running_round_until_it_stops(workdir):
    import threading
    from datetime import UTC, datetime, timedelta

    from typer.testing import CliRunner

    from rlhf import rounds
    from rlhf.cli import app
    from storage.records import RoundRecord
    from storage.rounds import insert_round

    settings, store = workdir
    earlier = rounds.round_folder(settings, "round_20261207T080000_cccccc")  # a finished round like it
    rounds.save_round_settings(settings, earlier)
    with store.transaction() as con:
        insert_round(con, RoundRecord(round_id=earlier.name, status="done", stage="done", folder=str(earlier),
                                      timings={"ppo": 200.0, "generate": 180.0, "select": 0.5, "enqueue": 0.5}))
    child = subprocess.Popen(["sleep", "120"])  # stands in for the round's process
    try:
        record = rounds.create_round(store, settings, pid=child.pid)
        now = datetime.now(UTC)
        rounds.RoundPaths(Path(record.folder)).progress.write_text(json.dumps({
            "stage": "ppo", "step": 2, "total": 6, "pace_step": 0,
            "pace_at": (now - timedelta(seconds=60)).isoformat(), "updated_at": now.isoformat()}))
        threading.Timer(1.5, child.kill).start()  # the process dies while we watch
        watched = CliRunner().invoke(app, ["round", "status", record.round_id, "--watch", "0.2",
                                           "--data-dir", str(settings.data_dir)])
    finally:
        child.kill()
        child.wait()
    assert watched.exit_code == 0, watched.output
    lines = watched.output.splitlines()
    # 2 min of PPO at its pace, then generate, select and enqueue as long as the earlier round's (3 min).
    assert lines[0].endswith("] progress: ppo 2/6, about 2 min left in this stage; about 5 min left in the "
                             "round, by the last round with these settings"), lines
    assert len([ln for ln in lines if ln.startswith("[")]) == 1  # said again only when it changes
    assert f"Round {record.round_id}: interrupted" in watched.output  # then the status, once it stopped


def _wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the round process ended (rc {proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_round_killed_during_ppo_leaves_the_store_unchanged_and_resumes_after_the_store_moved(workdir, tmp_path):
    from rlhf.ppo.checkpoint import latest_checkpoint
    from rlhf.rounds import (
        RoundPaths,
        new_round_id,
        resume_round,
        round_folder,
        round_status,
        save_round_settings,
    )

    settings, store = workdir
    # Slow PPO a little (more steps) so that the kill lands inside it.
    settings = tiny_settings(settings.data_dir, settings.model.policy, ppo={"steps": 4})
    before = data_fingerprint(store)
    round_id = new_round_id()
    folder = round_folder(settings, round_id)
    save_round_settings(settings, folder)
    paths = RoundPaths(folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    with paths.log.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from rlhf.cli.rounds import main; main()", "run", "--id", round_id,
             "--data-dir", str(settings.data_dir), "--no-progress"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT),
        )
    try:
        # Kill it once PPO has saved a checkpoint (the reward model is finished, PPO is mid-way).
        _wait_for(lambda: latest_checkpoint(paths.ppo) is not None, 400, proc, "a PPO checkpoint")
        assert not paths.marker("ppo").exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert data_fingerprint(store) == before, "a killed round changed the store's data"
    # A background round's output is its log already: each record once, not again through a file handler.
    assert paths.log.read_text(encoding="utf-8").count("stage snapshot finished") == 1
    status = round_status(store, round_id)
    assert status["status"] == "interrupted"
    assert status["completed_stages"] == ["snapshot", "reward_model"]

    # The data folder moves (a restored backup, another disk) before the round resumes: it goes on from its
    # files at the new place and writes nothing at the old one.
    moved = tmp_path / "moved"
    settings.data_dir.rename(moved)
    store = Store(moved / settings.store.db_file)
    paths = RoundPaths(moved / "rounds" / round_id)
    record = resume_round(store, round_id, progress=False)
    assert record.status == "done", record.error
    assert not settings.data_dir.exists()
    with store.transaction() as con:
        from storage import generations as gen_repo
        from storage import reward_models as rm_repo

        policy = gen_repo.get_policy(con, record.policy_id)
        reward_model = rm_repo.get_reward_model(con, record.reward_model_id)
    assert Path(record.folder) == paths.folder.resolve()
    assert (Path(policy.adapter_path) / "adapter_config.json").is_file()
    assert Path(reward_model.path).is_relative_to(moved.resolve()) and Path(reward_model.path).is_dir()
    marker = json.loads(paths.marker("ppo").read_text())
    assert marker["resumed_from"] >= 1  # continued from a PPO checkpoint, not from scratch
    after = data_fingerprint(store)
    assert after["labels"] == before["labels"]
    assert after["pairs"][0] > before["pairs"][0]
    assert after["policies"][0] == before["policies"][0] + 1
    with store.transaction() as con:
        from storage import rounds as rounds_repo

        steps = rounds_repo.training_metrics_frame(con, run_id=f"{round_id}-ppo")["step"].tolist()
    assert sorted(steps) == list(range(1, 5))  # each step once, though some ran twice around the kill
    # The live file too: the steps after the checkpoint that the killed attempt wrote were dropped when PPO
    # went on, so the Training page never drew two attempts' curves as one.
    written = [json.loads(line)["step"] for line in paths.metrics.read_text().splitlines()]
    assert written == sorted(set(written)) == list(range(1, 5)), written


def test_an_interrupted_ppo_forgets_the_steps_it_runs_again(tmp_path):
    from rlhf.rounds.stages import _drop_metrics_after

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "kl/mean": 0.1 * s}) + "\n" for s in (1, 2, 3)))
    _drop_metrics_after(path, 1)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"step": 1, "kl/mean": 0.1}]
    _drop_metrics_after(path, 0)
    assert path.read_text() == ""
    _drop_metrics_after(tmp_path / "none.jsonl", 0)  # no file yet: nothing to do


def test_usable_labels_leave_out_gold_pairs_and_heldout_shoppers(workdir):
    """What the reward model can learn from: current A/B labels that are not re-shows, on pairs that are
    neither gold nor on a held-out shopper's context."""
    from rlhf.rounds import usable_label_count
    from storage.generations import get_pair
    from storage.queue import current_labels, import_labels, set_gold
    from storage.records import Label

    _settings, store = workdir
    with store.transaction() as con:
        usable = current_labels(con)
        assert usable and all(not lab.is_reshow and lab.choice in ("A", "B") for lab in usable)
        # A tie, a "both bad" and a re-show (the consistency check) on a pair that trains: none of them count.
        import_labels(con, [Label("lab_tie", usable[0].pair_id, "someone", "tie", left_side="A"),
                            Label("lab_both_bad", usable[0].pair_id, "someone_else", "both_bad", left_side="A"),
                            Label("lab_reshow", usable[0].pair_id, usable[0].annotator_id, "A", strength=2,
                                  left_side="B", is_reshow=True)])
        labels = current_labels(con)
    assert usable_label_count(store) == len(usable) == len(labels) - 3
    with store.transaction() as con:
        one, other = sorted({lab.pair_id for lab in usable})[:2]
        set_gold(con, one, "A")  # a gold pair checks annotators and never trains
        # A pair on a held-out shopper's context evaluates the reward model and never trains it.
        con.execute("UPDATE contexts SET split = 'heldout' WHERE context_id = ?", [get_pair(con, other).context_id])
        on_other_context = {lab.pair_id for lab in labels
                            if get_pair(con, lab.pair_id).context_id == get_pair(con, other).context_id}
        retracted = next(lab for lab in usable if lab.pair_id not in {one} | on_other_context)
        con.execute("INSERT INTO label_retractions (label_id, retracted_by, reason, retracted_at) "
                    "VALUES (?, 'test', 'undo', now())", [retracted.label_id])  # an undone label
    left_out = {one} | on_other_context
    assert usable_label_count(store) == sum(1 for lab in usable if lab.pair_id not in left_out) - 1 < len(usable)


def what_a_run_wrote(store: Store, round_id: str) -> dict[str, list]:
    """What a store holds after a round, by content (list texts, not record ids), in the store's own order."""
    from storage import generations as gen_repo
    from storage import queue as queue_repo
    from storage import reward_models as rm_repo
    from storage import rounds as rounds_repo

    with store.transaction() as con:
        pairs = gen_repo.list_pairs(con, source=None)  # highest priority first: the order annotators get them
        policies = [p.policy_id for p in gen_repo.list_policies(con)]
        texts = {g.generation_id: g.raw_text for g in gen_repo.generations_for_policies(con, policies)}
        labels = queue_repo.current_labels(con)  # oldest first
        steps = rounds_repo.training_metrics_frame(con, run_kind="ppo")
        headline = dict(rounds_repo.list_evaluations(con, round_id=round_id)[0]["metrics"]["headline"])
        reward_model = next(m for m in rm_repo.list_reward_models(con) if m.round_id == round_id)
    by_id = {p.pair_id: p for p in pairs}

    def said(p) -> tuple:
        return p.context_id, texts[p.gen_a], texts[p.gen_b], p.strategy, p.priority, p.selection_reason

    def rounded(metrics: dict) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items() if not k.startswith("time/")}

    headline.pop("policy")  # the new policy's id, made from the clock
    return {
        "first_queue": [said(p) for p in pairs if p.round_id is None],
        "labels": [(lab.annotator_id, said(by_id[lab.pair_id]), lab.left_side, lab.choice, lab.strength)
                   for lab in labels],
        "round_pairs": [said(p) for p in pairs if p.round_id == round_id],
        "ppo_steps": [rounded({k: v for k, v in r.items() if k != "run_id"}) for r in steps.to_dict(orient="records")],
        "reward_model": [rounded(reward_model.metrics or {})],
        "evaluation": [rounded(headline)],
    }


def test_one_seed_repeats_the_queue_the_labels_and_the_round(tiny_model, tmp_path):  # noqa: F811
    """Two stores built, labelled and trained apart from the same seeds hold the same lists, pairs (sides
    and serving order included), labels and round results: no randomness hides in record ids. The queue
    has no seed of its own here, so the simulation's seed must also fix which list was on the left."""
    from rlhf.rounds import run_round

    runs = []
    for name in ("first", "second"):
        settings = tiny_settings(tmp_path / name, tiny_model, queue={"seed": None})
        store = build_labelled_store(settings)
        record = run_round(store, settings, progress=False)
        assert record.status == "done", record.error
        runs.append(what_a_run_wrote(store, record.round_id))
    first, second = runs
    assert first["first_queue"] and first["labels"] and first["round_pairs"] and first["ppo_steps"]
    for part in first:
        assert first[part] == second[part], part


def _twice_at_once(action) -> list:
    """``action()`` in two threads at once: what each returned, or the RoundError it raised."""
    import threading

    from rlhf.errors import RoundError

    outcomes: list = []

    def one() -> None:
        try:
            outcomes.append(action())
        except RoundError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_two_launches_at_once_start_one_round(workdir, monkeypatch):
    """Two engineers (or a tab and the CLI) click at the same moment: both pass the early check, and the
    unit of work that inserts the round decides; the other gets "still running" and leaves nothing behind."""
    import threading

    from rlhf.errors import RoundError
    from rlhf.rounds import runner
    from storage import rounds as rounds_repo

    settings, store = workdir
    both_checked = threading.Barrier(2, timeout=30)
    checked = runner.check_can_start

    def check_then_wait(store, settings):
        n = checked(store, settings)
        both_checked.wait()  # neither inserts before both have passed the check
        return n

    monkeypatch.setattr(runner, "check_can_start", check_then_wait)
    outcomes = _twice_at_once(lambda: runner.create_round(store, settings))
    started = [o for o in outcomes if not isinstance(o, RoundError)]
    refused = [o for o in outcomes if isinstance(o, RoundError)]
    assert len(started) == 1 and len(refused) == 1, outcomes
    assert "is still running" in str(refused[0]) and started[0].round_id in str(refused[0])
    with store.transaction() as con:
        assert [r.round_id for r in rounds_repo.list_rounds(con)] == [started[0].round_id]
    assert [p.name for p in (Path(settings.data_dir) / "rounds").iterdir()] == [started[0].round_id]

    # Its process dies; two resumes at once (two tabs): one marks it running again, the other is refused.
    with store.transaction() as con:
        rounds_repo.update_round(con, started[0].round_id, pid=2**22 + 12345)  # a pid no process has
    assert runner.effective_status(runner._get_row(store, started[0].round_id)) == "interrupted"
    both_looked = threading.Barrier(2, timeout=30)
    looked = runner.effective_status

    def look_then_wait(row):
        status = looked(row)
        both_looked.wait()
        return status

    monkeypatch.setattr(runner, "effective_status", look_then_wait)
    outcomes = _twice_at_once(lambda: runner.prepare_resume(store, started[0].round_id))
    assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "RoundError"], outcomes
    assert "is running; wait for it" in str(next(o for o in outcomes if o is not None))


def test_a_round_refuses_to_start_with_too_few_labels(workdir):
    from rlhf.errors import RoundError
    from rlhf.rounds import run_round
    from storage import rounds as rounds_repo

    settings, store = workdir
    strict = tiny_settings(settings.data_dir, settings.model.policy, rounds={"min_labels": 10_000})
    before = data_fingerprint(store)
    with pytest.raises(RoundError, match=r"usable labels .* at least 10000"):
        run_round(store, strict, progress=False)
    with store.transaction() as con:
        assert rounds_repo.list_rounds(con) == []
    assert data_fingerprint(store) == before
    assert not (Path(strict.data_dir) / "rounds").exists() or not any((Path(strict.data_dir) / "rounds").iterdir())


def test_a_round_starts_from_the_policy_the_engineer_names_and_refuses_one_it_cannot_start_from(workdir):
    """Rolling back: `round run --from` (settings.rounds.parent_policy) names the policy PPO continues from;
    an unknown id, a baseline or a policy of another base model is refused before anything is written."""
    from typer.testing import CliRunner

    from rlhf.cli import app
    from rlhf.errors import RoundError
    from rlhf.generate import default_policy_id
    from rlhf.rounds import create_round, parent_policy_id, startable_policies
    from storage import rounds as rounds_repo
    from storage.generations import upsert_policy
    from storage.records import Policy

    settings, store = workdir
    base = default_policy_id(settings.model.policy)

    def starting_from(policy_id):
        return settings.model_copy(update={"rounds": settings.rounds.model_copy(update={"parent_policy": policy_id})})

    with store.transaction() as con:
        upsert_policy(con, Policy("policy_r1", kind="llm", base_model=settings.model.policy,
                                  adapter_path="/tmp/r1-adapter", parent_id=base, round_id="round_r1"))
        upsert_policy(con, Policy("policy_other_base", kind="llm", base_model="some/other-model",
                                  adapter_path="/tmp/other", round_id="round_x"))
        upsert_policy(con, Policy("baseline:popularity", kind="baseline"))
    assert [p.policy_id for p in startable_policies(store, settings)] == ["policy_r1", base]  # newest first
    assert parent_policy_id(store, settings) == base  # no finished round: the base model
    assert parent_policy_id(store, starting_from("policy_r1")) == "policy_r1"
    assert parent_policy_id(store, starting_from(base)) == base
    before = data_fingerprint(store)
    for policy_id, said in (("policy_nope", "No policy with id 'policy_nope'"), ("baseline:popularity", "a baseline"),
                            ("policy_other_base", "trained on 'some/other-model'")):
        with pytest.raises(RoundError, match=said):
            create_round(store, starting_from(policy_id))
        result = CliRunner().invoke(app, ["round", "run", "--from", policy_id, "--no-progress",
                                          "--data-dir", str(settings.data_dir)])
        assert result.exit_code != 0 and said in result.output
    with store.transaction() as con:
        assert rounds_repo.list_rounds(con) == []
    assert data_fingerprint(store) == before
    assert not (Path(settings.data_dir) / "rounds").exists() or not any((Path(settings.data_dir) / "rounds").iterdir())
    # A round started from the earlier policy records it as its parent, with that policy's adapter.
    record = create_round(store, starting_from("policy_r1"))
    assert record.parent_policy_id == "policy_r1"
    meta = json.loads((Path(record.folder) / "round.json").read_text())
    assert meta["parent_adapter"] == "/tmp/r1-adapter"


def test_a_misspelt_stage_to_stop_after_is_refused_before_a_round_starts(workdir):
    from typer.testing import CliRunner

    from rlhf.cli import app
    from storage import rounds as rounds_repo

    settings, store = workdir
    result = CliRunner().invoke(app, ["round", "run", "--stop-after", "reward-model", "--no-progress",
                                      "--data-dir", str(settings.data_dir)])
    assert result.exit_code != 0
    assert "There is no stage 'reward-model'; the stages are snapshot, reward_model, ppo" in result.output
    with store.transaction() as con:
        assert rounds_repo.list_rounds(con) == []


def test_a_misspelt_stage_is_refused_in_the_background_too(workdir, monkeypatch):
    """`round run -b --stop-after bogus` used to start a full round in the background."""
    from typer.testing import CliRunner

    from rlhf import runtime
    from rlhf.cli import app
    from storage import rounds as rounds_repo

    settings, store = workdir
    spawned: list[list[str]] = []
    monkeypatch.setattr(runtime, "spawn_detached", lambda args, *rest: spawned.append(args) or 4242)
    where = ["--data-dir", str(settings.data_dir)]
    result = CliRunner().invoke(app, ["round", "run", "-b", "--stop-after", "bogus", *where])
    assert result.exit_code == 1 and "There is no stage 'bogus'" in result.output, result.output
    with store.transaction() as con:
        assert rounds_repo.list_rounds(con) == [] and spawned == []
    result = CliRunner().invoke(app, ["round", "run", "-b", "--stop-after", "snapshot", *where])
    assert result.exit_code == 0, result.output
    assert spawned[0][-2:] == ["--stop-after", "snapshot"]  # the background process stops where asked


def test_a_stopped_round_says_so_and_resumes_only_to_a_later_stage(workdir, caplog):
    """A deliberate --stop-after read as a crash ('Its process is gone'), and resuming "until" a finished
    stage ran every stage left."""
    from typer.testing import CliRunner

    from rlhf import rounds
    from rlhf.cli import app
    from rlhf.errors import RoundError

    caplog.set_level(logging.INFO)
    settings, store = workdir
    record = rounds.create_round(store, settings)
    done = rounds.execute(store, record.round_id, progress=False, stop_after="snapshot")
    assert (done.status, done.stage) == ("stopped", "snapshot")
    assert set(done.timings) == {"snapshot"}  # the stage it stopped after has its time (was written at the next)
    shown = CliRunner().invoke(app, ["round", "status", record.round_id, "--data-dir", str(settings.data_dir)])
    assert "Stopped after its stage snapshot, as asked" in shown.output and "process is gone" not in shown.output
    with pytest.raises(RoundError, match="has finished its stage snapshot already"):
        rounds.resume_round(store, record.round_id, progress=False, stop_after="snapshot")
    assert rounds.round_status(store, record.round_id)["status"] == "stopped"  # left as it was
    again = rounds.resume_round(store, record.round_id, progress=False, stop_after="reward_model")
    assert (again.status, again.stage) == ("stopped", "reward_model")
    assert set(again.timings) == {"snapshot", "reward_model"}
    # Run in this process (a terminal), not in the background: its log is in its folder all the same.
    log = (Path(again.folder) / "round.log").read_text(encoding="utf-8")
    assert "stage snapshot finished" in log and "stage reward_model finished" in log


def test_a_cancel_wrapped_in_a_librarys_error_is_recorded_and_logged_as_a_cancel(workdir, monkeypatch, caplog):
    """A SIGTERM during an import came back as "Could not import module 'AutoTokenizer'", and the round's log
    ended with that traceback: an engineer would hunt for an install problem."""
    from rlhf import rounds
    from rlhf.rounds import runner

    settings, store = workdir
    record = rounds.create_round(store, settings)

    def importing_when_cancelled(ctx):
        try:
            raise rounds.RoundCancelled("The round was cancelled (SIGTERM).")
        except rounds.RoundCancelled as exc:  # as transformers' lazy import wraps what stopped it
            raise RuntimeError("Could not import module 'AutoTokenizer'.") from exc

    monkeypatch.setitem(runner.STAGE_FUNCS, "snapshot", importing_when_cancelled)
    with pytest.raises(rounds.RoundCancelled, match="cancelled"):
        rounds.execute(store, record.round_id, progress=False)
    status = rounds.round_status(store, record.round_id)
    assert status["status"] == "cancelled" and "AutoTokenizer" not in (status["error"] or "")
    assert "failed" not in caplog.text and "cancelled during snapshot" in caplog.text


def test_the_training_page_says_why_an_unfinished_round_has_no_evaluation(workdir, monkeypatch):
    """A cancelled round's details said "no held-out contexts" when the store had dozens: it never got there."""
    from rlhf import rounds
    from rlhf.auth import create_user

    settings, store = workdir
    record = rounds.create_round(store, settings)
    rounds.execute(store, record.round_id, progress=False, stop_after="snapshot")
    create_user(store, "eng", "a-long-password-2", "engineer")
    at = render_training_page(store, settings, "eng", monkeypatch)
    assert not at.exception, at.exception
    captions = [c.value for c in at.caption]
    assert "This round is stopped: it has no held-out evaluation, which a round stores when it finishes." in captions
    assert not any("no held-out contexts" in c for c in captions)


def test_quick_settings_shrink_a_round_and_reject_unknown_keys(settings):
    from rlhf.errors import RoundError
    from rlhf.rounds import quick_overrides, quick_settings

    quick = quick_settings(settings)
    assert quick_overrides(settings) == []  # the sizes quick replaces are at their defaults: nothing is lost
    wanted = settings.rounds.quick
    assert quick.ppo.steps == wanted["ppo"]["steps"] < settings.ppo.steps
    assert quick.reward_model.backbone == wanted["reward_model"]["backbone"]
    assert quick.rounds.new_pairs == wanted["rounds"]["new_pairs"] < settings.rounds.new_pairs
    assert quick.ppo.clip_range == settings.ppo.clip_range  # keys not named keep their full value
    assert settings.ppo.steps == 200  # the full settings are untouched
    # A size the engineer set (file or environment) that quick replaces is named, with how to keep it.
    mine = settings.model_copy(update={"ppo": settings.ppo.model_copy(update={"steps": 20, "clip_range": 0.1})})
    assert quick_settings(mine).ppo.steps == wanted["ppo"]["steps"]
    assert quick_overrides(mine) == [(f"A quick round replaces ppo.steps = 20 from your settings with "
                                      f"{wanted['ppo']['steps']}; to keep yours, set rounds.quick.ppo.steps too.")]
    same = settings.model_copy(update={"ppo": settings.ppo.model_copy(update={"steps": wanted["ppo"]["steps"]})})
    assert quick_overrides(same) == []  # set, but to what quick uses anyway: nothing is lost
    bad = settings.model_copy(update={"rounds": settings.rounds.model_copy(update={"quick": {"ppo": {"stepz": 3}}})})
    for call in (quick_settings, quick_overrides):
        with pytest.raises(RoundError, match="stepz"):
            call(bad)
    wrong = settings.model_copy(update={"rounds": settings.rounds.model_copy(
        update={"quick": {"ppo": {"steps": "many"}}})})
    with pytest.raises(RoundError, match=r"settings\.rounds\.quick\.ppo\.steps: Input should be a valid integer"):
        quick_settings(wrong)
    # Loaded settings check them as they load, like every other value: one sentence, before any command.
    from rlhf.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match=r"Invalid settings\. rounds\.quick\.ppo\.steps: Input should be greater "
                                          r"than or equal to 0 \(given -1\)"):
        load_settings(store={"data_dir": settings.data_dir}, rounds={"quick": {"ppo": {"steps": -1}}})
    with pytest.raises(ConfigError, match="rounds.quick names an unknown section 'ppx'"):
        load_settings(store={"data_dir": settings.data_dir}, rounds={"quick": {"ppx": {"steps": 1}}})


def test_the_training_page_starts_a_quick_round_by_default_without_a_gpu(workdir, monkeypatch):
    import json

    from rlhf import rounds
    from rlhf.auth import create_user

    settings, store = workdir
    monkeypatch.setattr(rounds, "gpu_visible", lambda: False)
    launched: list = []
    monkeypatch.setattr(rounds, "check_can_start", lambda store, s: 42)
    monkeypatch.setattr(rounds, "launch_round",
                        lambda s, **kw: (launched.append(s), rounds.LaunchedRound("round_x", 123, 42))[1])
    create_user(store, "eng2", "a-long-password-3", "engineer")
    monkeypatch.setenv("RECFEEDBACK_PPO__STEPS", "20")  # the engineer's own size, which Quick replaces
    at = render_training_page(store, settings, "eng2", monkeypatch)
    size = next(r for r in at.radio if r.label == "Size")
    assert size.value == "Quick"
    quick_steps = settings.rounds.quick["ppo"]["steps"]
    assert f"({quick_steps} steps, batch" in "\n".join(c.value for c in at.caption)
    # How many usable labels the store has, beside how many a round needs: before the click, not after.
    assert f"the store has {rounds.usable_label_count(store):,} now" in "\n".join(c.value for c in at.caption)
    quick_eval = settings.rounds.quick["rounds"]["human_eval_pairs"]
    assert f"up to {quick_eval} against the parent's lists for held-out shoppers" in "\n".join(c.value for c in at.caption)
    assert [w.value for w in at.warning] == [(f"A quick round replaces ppo.steps = 20 from your settings with "
                                              f"{quick_steps}; to keep yours, set rounds.quick.ppo.steps too.")]
    next(b for b in at.button if b.label == "Start a round").click().run()
    assert not at.exception, at.exception
    assert len(launched) == 1 and launched[0].ppo.steps == quick_steps
    assert "Round round_x started in the background (pid 123) on 42 labels." in [s.value for s in at.success]
    size = next(r for r in at.radio if r.label == "Size")
    size.set_value("Full").run()
    assert not [w for w in at.warning if "replaces" in w.value]  # a full round keeps every size of the engineer's
    next(b for b in at.button if b.label == "Start a round").click().run()
    assert not at.exception, at.exception
    from rlhf.settings import load_settings

    assert launched[-1].ppo.steps == load_settings().ppo.steps != quick_steps  # the page's own (full) settings
    assert json.dumps(launched[-1].to_toml_dict())  # what launch_round writes to the round folder


def test_the_training_page_and_round_status_say_how_long_a_round_will_take(workdir, monkeypatch):
    """Before a click: how long the last round with the same settings took (or, for a Full round without a
    GPU, how much more it samples than a Quick one); while it runs: the time left in its stage."""
    from datetime import datetime, timedelta

    from typer.testing import CliRunner

    from rlhf import rounds
    from rlhf.auth import create_user
    from rlhf.cli import app
    from rlhf.rounds.layout import UTC
    from rlhf.settings import get_settings
    from storage.records import RoundRecord
    from storage.rounds import insert_round

    settings, store = workdir
    monkeypatch.setattr(rounds, "gpu_visible", lambda: False)
    create_user(store, "eng4", "a-long-password-5", "engineer")
    at = render_training_page(store, settings, "eng4", monkeypatch)
    page = get_settings()  # what the page runs with (its data folder is the store's)

    def said() -> str:
        return "\n".join(c.value for c in at.caption)

    assert "The last round with these settings" not in said()  # none has finished yet
    assert ("No round with these settings has finished here yet; a Quick round takes about 11 minutes on a 2-core "
            "CPU with the default model.") in said()
    next(r for r in at.radio if r.label == "Size").set_value("Full").run()
    assert "No round with these settings has finished here yet" not in said()  # a Full round gets the warning
    quick_ppo = rounds.quick_settings(page).ppo
    times = page.ppo.steps * page.ppo.batch_size / (quick_ppo.steps * quick_ppo.batch_size)
    assert [w.value for w in at.warning if "no GPU" in w.value] == [
        (f"This machine has no GPU, and a Full round is sized for one: PPO samples {page.ppo.steps} steps of "
         f"{page.ppo.batch_size} lists, {times:,.0f}× a Quick round's {quick_ppo.steps} of {quick_ppo.batch_size}, "
         f"and a Quick round takes about 11 minutes on a 2-core CPU.")]

    def add_round(round_id: str, status: str, run_settings, **fields) -> RoundRecord:
        folder = rounds.round_folder(page, round_id)
        rounds.save_round_settings(run_settings, folder)
        record = RoundRecord(round_id=round_id, status=status, folder=str(folder), **fields)
        with store.transaction() as con:
            insert_round(con, record)
        return record

    add_round("round_20261207T080000_aaaaaa", "done", rounds.quick_settings(page), stage="done",
              timings={"snapshot": 0.1, "reward_model": 6.5, "ppo": 407.1, "generate": 115.5, "select": 1.4,
                       "enqueue": 0.1}, metrics={"usable_labels": 36})
    marker = rounds.RoundPaths(rounds.round_folder(page, "round_20261207T080000_aaaaaa")).marker("reward_model")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"card": {"training": {"method": "lora"}}}))  # that round trained TRL + LoRA
    at = render_training_page(store, settings, "eng4", monkeypatch)
    assert ("The last round with these settings (`round_20261207T080000_aaaaaa` on 36 labels) took about 9 min: "
            "ppo 7 min, generate 2 min.") in said()
    assert "No round with these settings has finished here yet" not in said()
    # With this store's few labels the next one fits the probe instead: the estimate is said to be long.
    assert [w.value for w in at.warning if "reward model" in w.value] == [
        "That round's reward model was TRL + LoRA; this one fits the probe, which takes far less."]
    next(r for r in at.radio if r.label == "Size").set_value("Full").run()
    assert "The last round with these settings" not in said()  # a quick round says nothing of a full one
    assert [w for w in at.warning if "no GPU" in w.value]

    # A running quick round, 60 s into PPO and 2 of its 6 steps done: about 2 minutes left in the stage.
    running = add_round("round_20261207T090000_bbbbbb", "running", rounds.quick_settings(page), stage="ppo",
                        pid=os.getpid(), timings={"snapshot": 0.1, "reward_model": 6.0}, metrics={"usable_labels": 40})
    now = datetime.now(UTC)
    progress = {"stage": "ppo", "step": 2, "total": quick_ppo.steps, "pace_step": 0,
                "pace_at": (now - timedelta(seconds=60)).isoformat(), "updated_at": now.isoformat()}
    rounds.RoundPaths(Path(running.folder)).progress.write_text(json.dumps(progress))
    shown = CliRunner().invoke(app, ["round", "status", running.round_id, "--data-dir", str(page.data_dir)])
    assert shown.exit_code == 0, shown.output
    assert (f"progress: ppo 2/{quick_ppo.steps}, about 2 min left in this stage; about 4 min left in the round, "
            f"by the last round with these settings") in shown.output
    at = render_training_page(store, settings, "eng4", monkeypatch)
    assert not at.exception, at.exception
    # The stage's 2 minutes, then generate, select and enqueue as long as the last like round's (117 s).
    assert ("The last round with these settings took about 9 min (`round_20261207T080000_aaaaaa`); at this "
            "stage's pace and its later stages' times, this one has about 4 min left.") in said()
    bars = [e.proto.text for e in at.get("progress")]
    assert any("about 2 min left in this stage" in text for text in bars), bars


def test_the_training_page_starts_a_round_from_the_policy_the_engineer_picks(workdir, monkeypatch):
    from rlhf import rounds
    from rlhf.auth import create_user
    from rlhf.settings import get_settings
    from storage.generations import upsert_policy
    from storage.records import Policy

    settings, store = workdir
    launched: list = []
    monkeypatch.setattr(rounds, "check_can_start", lambda store, s: 42)
    monkeypatch.setattr(rounds, "launch_round",
                        lambda s, **kw: (launched.append(s), rounds.LaunchedRound("round_x", 123, 42))[1])
    create_user(store, "eng5", "a-long-password-6", "engineer")
    at = render_training_page(store, settings, "eng5", monkeypatch)
    assert not [b for b in at.selectbox if b.label == "Start from"]  # nothing to choose before a round made a policy
    page = get_settings()
    with store.transaction() as con:
        for k in (1, 2):
            upsert_policy(con, Policy(f"policy_r{k}", kind="llm", base_model=page.model.policy,
                                      adapter_path=f"/tmp/r{k}", round_id=f"round_r{k}"))
    at = render_training_page(store, settings, "eng5", monkeypatch)
    box = next(b for b in at.selectbox if b.label == "Start from")
    assert box.options[0].startswith("Default (") and "policy_r1 (not evaluated vs zero-shot)" in box.options
    box.set_value("policy_r1").run()
    assert "PPO from `policy_r1`" in "\n".join(c.value for c in at.caption)
    next(b for b in at.button if b.label == "Start a round").click().run()
    assert not at.exception, at.exception
    assert launched[-1].rounds.parent_policy == "policy_r1"


def test_round_run_says_how_long_to_expect_before_it_starts(workdir, monkeypatch):
    from typer.testing import CliRunner

    from rlhf import rounds
    from rlhf.cli import app
    from storage.rounds import update_round

    settings, store = workdir
    monkeypatch.setattr(rounds, "gpu_visible", lambda: False)
    run = ["round", "run", "--stop-after", "snapshot", "--no-progress", "--data-dir", str(settings.data_dir)]
    first = CliRunner().invoke(app, run)
    assert first.exit_code == 0, first.output
    assert "Warning: This machine has no GPU, and a Full round is sized for one: PPO samples" in first.output
    assert "The last round with these settings" not in first.output
    round_id = rounds.list_round_summaries(store)[-1]["round_id"]
    with store.transaction() as con:  # as if it had run to the end
        update_round(con, round_id, status="done", stage="done", timings={"reward_model": 30.0, "ppo": 4000.0})
    second = CliRunner().invoke(app, run)
    assert second.exit_code == 0, second.output
    labels = rounds.list_round_summaries(store)[-2]["metrics"]["usable_labels"]
    assert (f"The last round with these settings ({round_id} on {labels} labels) took about 1 h 7 min: "
            f"ppo 1 h 7 min.") in second.output
    assert "no GPU" not in second.output  # a measured time says more than the warning
    rounds.cancel_round(store, rounds.list_round_summaries(store)[-1]["round_id"])  # the second one stopped
    refused = CliRunner().invoke(app, [*run, "--from", "policy_nope"])
    assert refused.exit_code != 0 and "No policy with id 'policy_nope'" in refused.output
    assert "The last round" not in refused.output  # the refusal comes first, not an estimate for a round that won't run
    quick = CliRunner().invoke(app, [*run, "--quick"])  # no Quick round has finished: what one takes on 2 cores
    assert quick.exit_code == 0, quick.output
    assert ("No round with these settings has finished here yet; a Quick round takes about 11 minutes on a 2-core "
            "CPU with the default model.") in quick.output and "no GPU" not in quick.output


def test_a_launched_round_is_running_before_its_process_starts_and_a_second_click_is_refused(workdir, monkeypatch):
    """The background process needs seconds to import torch; the page that launched the round must show
    it running at once (it showed the previous round, frozen, until the user clicked something), and a
    second click in that time must not start a second round."""
    import subprocess

    from rlhf import rounds, runtime
    from rlhf.auth import create_user
    from rlhf.errors import RoundError

    settings, store = workdir
    children: list[subprocess.Popen] = []
    spawned: list[list[str]] = []

    def fake_spawn(args, log_path, extra_env=None):  # a process that stays alive like a round would
        spawned.append(list(args))
        children.append(subprocess.Popen(["sleep", "120"]))
        return children[-1].pid

    monkeypatch.setattr(runtime, "spawn_detached", fake_spawn)
    try:
        create_user(store, "eng3", "a-long-password-4", "engineer")
        at = render_training_page(store, settings, "eng3", monkeypatch)
        next(b for b in at.button if b.label == "Start a round").click().run()
        assert not at.exception, at.exception
        assert len(spawned) == 1 and spawned[0][2:4] == ["execute", spawned[0][3]]
        round_id = spawned[0][3]
        status = rounds.round_status(store, round_id)
        assert status["status"] == "running" and status["pid"] == children[0].pid
        # The page that launched it already shows it running (no reload, no child needed for that).
        assert any(round_id in m.value and "running" in m.value for m in at.markdown)
        assert next(b for b in at.button if b.label == "Start a round").disabled
        # A second launch while it runs (another tab, the CLI) is refused; no second process.
        with pytest.raises(RoundError, match="still running"):
            rounds.launch_round(settings, store=store)
        assert len(spawned) == 1
        # Its process dies: the round is interrupted; resuming marks it running before the new process runs.
        children[0].kill()
        children[0].wait()
        assert rounds.round_status(store, round_id)["status"] == "interrupted"
        launched = rounds.launch_round(settings, round_id=round_id, resume=True, store=store)
        assert launched == (round_id, children[1].pid, status["metrics"]["usable_labels"])
        assert spawned[1][2:4] == ["execute", round_id]
        assert rounds.round_status(store, round_id)["status"] == "running"
        # Cancelled before its process got to run a stage: the process must not run it anyway.
        rounds.cancel_round(store, round_id, grace_s=0.1)
        with pytest.raises(RoundError, match="cancelled; there is nothing to run"):
            rounds.execute(store, round_id, progress=False)
    finally:
        for child in children:
            child.kill()
            child.wait()
    # A process that cannot start leaves a failed round with the reason, not a 'running' ghost.
    def no_python(*args, **kwargs):
        raise OSError("no python")

    monkeypatch.setattr(runtime, "spawn_detached", no_python)
    with pytest.raises(RoundError, match="could not start"):
        rounds.launch_round(settings, round_id=round_id, resume=True, store=store)
    failed = rounds.round_status(store, round_id)
    assert failed["status"] == "failed" and "no python" in failed["error"]


def test_the_round_log_shows_a_redrawn_progress_bar_once_in_its_last_state(tmp_path):
    """A background round's log holds every redraw of transformers' and tqdm's bars (carriage returns); the
    Training page and `round status` show the log as a terminal would: each bar once, as it ended."""
    from rlhf.rounds import RoundPaths, log_tail

    log = RoundPaths(tmp_path).log
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(
        b"INFO stage ppo\n"
        b"\rLoading weights:   0%|          | 0/272\rLoading weights:  54%|#####     | 148/272"
        b"\rLoading weights: 100%|##########| 272/272\n"
        b"\n"
        b"INFO PPO on cpu\r\n"
        b"lists:  50%|#####     | 3/6\r"
    )
    assert log_tail(tmp_path).splitlines() == [
        "INFO stage ppo", "Loading weights: 100%|##########| 272/272", "INFO PPO on cpu", "lists:  50%|#####     | 3/6"]
    assert log_tail(tmp_path, 2).splitlines() == ["INFO PPO on cpu", "lists:  50%|#####     | 3/6"]
    assert log_tail(tmp_path / "nowhere") == ""


@pytest.mark.parametrize(("section", "changes", "said"), [
    ("ppo", {"batch_size": 12, "mini_batch_size": 8}, "batch_size (12) must be a multiple of mini_batch_size (8)"),
    ("rounds", {"active_uncertainty_share": 0.0, "active_disagreement_share": 0.0, "active_coverage_share": 0.0,
                "active_random_share": 0.0}, "At least one selection share must be positive"),
])
def test_settings_that_would_fail_a_round_midway_are_refused_before_it_starts(workdir, section, changes, said):
    """Each value is valid alone, the combination is not: PPO's stage (after the reward model has trained) or
    the select stage would fail. The round is refused up front and nothing is written."""
    from rlhf import rounds
    from rlhf.errors import RoundError

    settings, store = workdir
    part = getattr(settings, section).model_copy(update=changes)
    bad = settings.model_copy(update={section: part})
    before = rounds.list_round_summaries(store)
    with pytest.raises(RoundError, match=re.escape(said)):
        rounds.check_can_start(store, bad)
    with pytest.raises(RoundError, match=re.escape(said)):
        rounds.launch_round(bad, store=store)
    assert rounds.list_round_summaries(store) == before
    assert rounds.check_can_start(store, settings) >= settings.rounds.min_labels  # the fixture's own settings pass


def test_the_training_page_says_what_in_the_settings_stops_a_round_before_a_click(workdir, monkeypatch):
    """A PPO batch that its mini-batches do not divide: a Quick round replaces both and may start; a Full
    round would fail at its PPO stage, so the page says why and its button waits."""
    from rlhf import rounds
    from rlhf.auth import create_user

    settings, store = workdir
    monkeypatch.setattr(rounds, "gpu_visible", lambda: False)
    create_user(store, "eng9", "a-long-password-9", "engineer")
    monkeypatch.setenv("RECFEEDBACK_PPO__BATCH_SIZE", "12")
    at = render_training_page(store, settings, "eng9", monkeypatch)

    def start_button():
        return next(b for b in at.button if b.label == "Start a round")

    assert not at.error and not start_button().disabled  # Quick: batch 4 of mini-batches of 4
    next(r for r in at.radio if r.label == "Size").set_value("Full").run()
    assert [e.value for e in at.error] == [
        ("Invalid PPO configuration: batch_size (12) must be a multiple of mini_batch_size (8). Fix [ppo] in "
         "recfeedback.toml (or its RECFEEDBACK_PPO__* variables).")]
    assert start_button().disabled
    # Too few usable labels: the caption says how many a round needs, and the button waits for them.
    monkeypatch.delenv("RECFEEDBACK_PPO__BATCH_SIZE")
    monkeypatch.setenv("RECFEEDBACK_ROUNDS__MIN_LABELS", "100000")
    at = render_training_page(store, settings, "eng9", monkeypatch)
    usable = rounds.usable_label_count(store)
    assert not at.error and start_button().disabled
    assert start_button().help == f"Needs at least 100000 usable labels; the store has {usable:,}."


def test_a_marker_written_with_the_old_absolute_paths_means_the_moved_stores_own_files(tmp_path):
    """Rounds from before paths were relative wrote absolute ones into their stage markers; resumed after the
    store moved (its original still in place), PPO would have trained on the original store's reward model."""
    from rlhf.rounds import RoundPaths
    from rlhf.rounds.stages import RoundContext

    old, new = tmp_path / "old", tmp_path / "new"
    for folder in (old, new):
        (folder / "reward_models" / "rm_1").mkdir(parents=True)
    ctx = RoundContext("round_1", load_settings(store={"data_dir": new}), None, RoundPaths(new / "rounds" / "round_1"))
    assert ctx.local(str(old / "reward_models" / "rm_1")) == str(new.resolve() / "reward_models" / "rm_1")
    assert ctx.local("reward_models/rm_1") == str(new.resolve() / "reward_models" / "rm_1")
    assert ctx.local(str(tmp_path / "elsewhere" / "adapter")) == str(tmp_path / "elsewhere" / "adapter")  # no such tail
    assert ctx.portable(new / "reward_models" / "rm_1") == "reward_models/rm_1"


def test_a_round_id_the_engineer_chooses_must_be_new_and_name_a_folder_inside_rounds(workdir):
    from rlhf.errors import RoundError
    from rlhf.rounds import create_round
    from storage.rounds import list_rounds

    settings, store = workdir
    first = create_round(store, settings, "round_mine", pid=os.getpid())
    with store.transaction() as con:  # as if it had stopped: the id is still taken
        con.execute("UPDATE rounds SET status = 'stopped' WHERE round_id = ?", [first.round_id])
    # A second round under the same id: a sentence, not DuckDB's duplicate-key traceback.
    with pytest.raises(RoundError, match=r"A round with id 'round_mine' exists already: .* round resume round_mine"):
        create_round(store, settings, "round_mine")
    # An id that would leave rounds/ (or need quoting in the command the CLI prints next) is refused.
    for bad in ("my/../../bad", "../x", "with space", ".hidden", "a" * 81):
        with pytest.raises(RoundError, match="cannot be a round id"):
            create_round(store, settings, bad)
    with store.transaction() as con:
        assert [r.round_id for r in list_rounds(con)] == ["round_mine"]
    assert sorted(p.name for p in (settings.data_dir / "rounds").iterdir()) == ["round_mine"]
    assert not (settings.data_dir / "bad").exists()
    # A mistyped id names the round it was cut from, or where the ids are; a round id given where a policy
    # belongs names the round's policy.
    from rlhf.rounds import parent_policy_id, round_status
    from rlhf.settings import with_values
    from storage.errors import NotFoundError

    with pytest.raises(NotFoundError, match=r"No round with id 'round_mi'; did you mean round_mine\?"):
        round_status(store, "round_mi")
    with pytest.raises(NotFoundError, match=r"No round with id 'zzz' \(`recfeedback round list` shows them\)"):
        round_status(store, "zzz")
    with store.transaction() as con:
        con.execute("UPDATE rounds SET policy_id = 'policy_mine' WHERE round_id = 'round_mine'")
    with pytest.raises(RoundError, match="'round_mine' is a round, not a policy: start from its policy, policy_mine"):
        parent_policy_id(store, with_values(settings, "rounds", parent_policy="round_mine"))


def test_a_cancel_reads_as_what_the_engineer_asked_for_and_says_how_to_resume(workdir, monkeypatch):
    """A cancel from the page showed a red "The round was cancelled (SIGTERM)." (the round process's own record
    overwrote the cancel's), and `round status` did not say how to go on."""
    from typer.testing import CliRunner

    from rlhf import rounds
    from rlhf.auth import create_user
    from rlhf.cli import app
    from rlhf.rounds import runner

    settings, store = workdir
    record = rounds.create_round(store, settings, pid=os.getpid())
    rounds.cancel_round(store, record.round_id)
    # The round's process then records its SIGTERM: the user's words stay.
    runner._safe_update(store, record.round_id, status="cancelled", error="Its process was stopped (SIGTERM).")
    assert rounds.round_status(store, record.round_id)["error"] == "Cancelled by the user."
    shown = CliRunner().invoke(app, ["round", "status", record.round_id, "--data-dir", str(settings.data_dir)])
    assert "why: Cancelled by the user." in shown.output and "error:" not in shown.output
    assert f"`recfeedback round resume {record.round_id}`" in shown.output
    create_user(store, "eng", "a-long-password-2", "engineer")
    at = render_training_page(store, settings, "eng", monkeypatch)
    assert not at.exception, at.exception
    assert not [e for e in at.error if "Cancelled" in e.value]
    assert any(i.value.startswith("Cancelled by the user. The store is as it was") for i in at.info)
    # Resumed, it is running again: no finish time left from the cancel.
    rounds.prepare_resume(store, record.round_id)
    status = rounds.round_status(store, record.round_id)
    assert status["status"] == "running" and status["finished_at"] is None and status["error"] is None
