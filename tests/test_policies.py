"""Policies: the registry listing and exporting a trained policy as a standalone transformers model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlhf.policies import PROVENANCE_FILE, PolicyExportError, export_policy, model_card, policy_summaries
from storage.generations import upsert_policy
from storage.records import Policy, RoundRecord
from storage.rounds import insert_evaluation, insert_round
from tests.seed import seed_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROUND = "round_20260101T000000_abcdef"
TRAINED = "policy_20260101T000000_abcdef"
VERDICT_REPORT = {"zero_shot_policy_id": "zero", "policy_id": TRAINED,
                  "ndcg_difference": {"zero": {"mean": 0.03, "lo": 0.01, "hi": 0.05, "n": 40}}}


@pytest.fixture
def trained(store, tiny_folder):
    """A store with the tiny base registered as the zero-shot policy and base + adapter as a round's policy."""
    root, _, _ = tiny_folder
    with store.transaction() as con:
        upsert_policy(con, Policy("zero", kind="llm", base_model=str(root / "base")))
        insert_round(con, RoundRecord(
            round_id=ROUND, status="done", stage="done", config={"generation": {"list_length": 5, "constrained": True}},
            metrics={"ndcg@5": 0.123, "eval_validity": 0.9, "rm_heldout_accuracy": 0.7}, policy_id=TRAINED,
            parent_policy_id="zero", reward_model_id="rm_x",
        ))
        upsert_policy(con, Policy(TRAINED, kind="llm", base_model=str(root / "base"), adapter_path=str(root / "adapter"),
                                  parent_id="zero", round_id=ROUND, metrics={"reward_model": "rm_x"}))
        insert_evaluation(con, "eval_1", VERDICT_REPORT, policy_id=TRAINED, round_id=ROUND, dataset="heldout")
    return store


def test_exported_policy_is_base_plus_adapter_as_a_plain_model(trained, settings, tiny_folder, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.models import load_causal_lm, resolve_model_source

    root, ids, expected = tiny_folder
    out = tmp_path / "served" / "model"
    result = export_policy(trained, settings, TRAINED, out)
    assert result.path == out.resolve() and result.merged_adapter and result.dtype == "float32"
    # Loads with plain transformers, no PEFT, and computes what base + adapter computes.
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not hasattr(model, "peft_config") and not (out / "adapter_config.json").exists()
    with torch.inference_mode():
        assert torch.allclose(model(ids).logits, expected, atol=1e-4)
    tokenizer = AutoTokenizer.from_pretrained(out)
    original = AutoTokenizer.from_pretrained(root / "base")
    assert tokenizer.chat_template == original.chat_template and tokenizer("a mug").input_ids == original("a mug").input_ids
    # RecFeedback takes the folder as a policy.
    assert resolve_model_source(str(out)).location == str(out.resolve())
    again, _ = load_causal_lm(str(out), dtype="float32")
    with torch.inference_mode():
        assert torch.allclose(again(ids).logits, expected, atol=1e-4)
    # Provenance and card say what it is and how its round was judged.
    provenance = json.loads((out / PROVENANCE_FILE).read_text())
    assert provenance["policy_id"] == TRAINED and provenance["round_id"] == ROUND
    assert provenance["parent_policy_id"] == "zero" and provenance["reward_model_id"] == "rm_x"
    assert provenance["adapter_path"] == str(root / "adapter") and provenance["round_metrics"]["ndcg@5"] == 0.123
    assert provenance["ndcg_vs_zero_shot"].startswith("better: +0.030 [+0.010, +0.050] over 40 shoppers")
    card = (out / "README.md").read_text()
    assert f"# {TRAINED}" in card and "| NDCG@5 on held-out shoppers | 0.123 |" in card and "better: +0.030" in card
    assert "constrained decoding" in card and "dequantized" not in card  # a transformers base, not a GGUF
    assert "adapter a round trained is merged into the base weights" in card
    gguf_card = model_card({**provenance, "base_gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"})
    assert "dequantized from the GGUF file `SmolLM2-135M-Instruct.Q4_1.gguf`" in gguf_card
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]  # no partial folder left beside it
    # Readable as the folder is (transformers writes the weights owner-only): a server may run as another user.
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}["model.safetensors"] == out.stat().st_mode & 0o666


def test_half_precision_export_is_half_the_size_and_close(trained, settings, tiny_folder, tmp_path):
    from transformers import AutoModelForCausalLM

    root, ids, expected = tiny_folder
    full = export_policy(trained, settings, TRAINED, tmp_path / "fp32")
    half = export_policy(trained, settings, TRAINED, tmp_path / "bf16", dtype="bfloat16")
    model = AutoModelForCausalLM.from_pretrained(half.path, dtype="auto")
    assert next(model.parameters()).dtype == torch.bfloat16
    size = {r.dtype: (r.path / "model.safetensors").stat().st_size for r in (full, half)}
    assert size["bfloat16"] < 0.6 * size["float32"]
    base = AutoModelForCausalLM.from_pretrained(root / "base")
    with torch.inference_mode():
        adapter_effect = (base(ids).logits - expected).abs().max()
        error = (model(ids).logits.float() - expected).abs().max()
    assert error < adapter_effect / 10


def test_the_base_policy_exports_without_an_adapter(trained, settings, tiny_folder, tmp_path):
    from transformers import AutoModelForCausalLM

    root, ids, _ = tiny_folder
    result = export_policy(trained, settings, "zero", tmp_path / "zero")
    assert not result.merged_adapter and "no adapter" in result.sentence()
    base = AutoModelForCausalLM.from_pretrained(root / "base")
    exported = AutoModelForCausalLM.from_pretrained(result.path)
    with torch.inference_mode():
        assert torch.allclose(base(ids).logits, exported(ids).logits, atol=1e-6)
    provenance = json.loads((result.path / PROVENANCE_FILE).read_text())
    assert provenance["round_id"] is None and provenance["ndcg_vs_zero_shot"] is None
    card = (result.path / "README.md").read_text()
    assert "not trained: the base model as is" in card and "No round trained it" in card
    assert "adapter a round trained is merged" not in card  # there is none
    # The settings it is sampled with now, since no round recorded any (the card reads the list length there).
    assert provenance["generation"] == settings.generation.model_dump(mode="json")


def test_bad_requests_are_refused_by_name_and_touch_nothing(trained, settings, tmp_path):
    with pytest.raises(PolicyExportError, match=r"No policy 'nope'.*can be exported: ") as unknown:
        export_policy(trained, settings, "nope", tmp_path / "a")
    assert "zero" in str(unknown.value) and TRAINED in str(unknown.value)
    with pytest.raises(PolicyExportError, match="a baseline, a rule rather than a model"):
        export_policy(trained, settings, "baseline-popularity", tmp_path / "a")
    with pytest.raises(PolicyExportError, match="dtype must be one of"):
        export_policy(trained, settings, TRAINED, tmp_path / "a", dtype="int8")
    assert not (tmp_path / "a").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(PolicyExportError, match="already has files in it.*--force"):
        export_policy(trained, settings, TRAINED, taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "model.bin"
    a_file.write_text("x")
    with pytest.raises(PolicyExportError, match="is a file"):
        export_policy(trained, settings, TRAINED, a_file)
    # --force replaces an earlier export with the complete new one, and nothing else: it deleted a folder of
    # other files, and given the data folder, the store.
    with pytest.raises(PolicyExportError, match="is not an earlier export .*Choose an empty folder"):
        export_policy(trained, settings, TRAINED, taken, overwrite=True)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    data_dir = Path(settings.data_dir)
    for holder in (data_dir, data_dir.parent):
        with pytest.raises(PolicyExportError, match="holds the store"):
            export_policy(trained, settings, TRAINED, holder, overwrite=True)
    assert settings.store.db_path.is_file()
    earlier = tmp_path / "earlier"
    export_policy(trained, settings, TRAINED, earlier)
    (earlier / "stale.txt").write_text("from before")
    export_policy(trained, settings, TRAINED, earlier, overwrite=True)
    assert not (earlier / "stale.txt").exists() and (earlier / "model.safetensors").is_file()


def test_a_policy_whose_adapter_is_gone_is_refused_with_what_to_do(trained, settings, tiny_folder, tmp_path):
    import shutil

    root, _, _ = tiny_folder
    moved = tmp_path / "adapter_copy"
    shutil.copytree(root / "adapter", moved)
    with trained.transaction() as con:
        upsert_policy(con, Policy("orphan", kind="llm", base_model=str(root / "base"), adapter_path=str(moved)))
    shutil.rmtree(moved)
    with pytest.raises(PolicyExportError, match="orphan's LoRA adapter is missing from .*restore it"):
        export_policy(trained, settings, "orphan", tmp_path / "out")
    with trained.transaction() as con:
        upsert_policy(con, Policy("lost", kind="llm", base_model=str(tmp_path / "no_such_model")))
    with pytest.raises(PolicyExportError, match="Cannot load lost's base model .*no_such_model"):
        export_policy(trained, settings, "lost", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_interrupted_export_leaves_nothing_and_keeps_the_old_folder(trained, settings, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", fail)  # after the weights are written
    exports = tmp_path / "exports"
    exports.mkdir()
    with pytest.raises(PolicyExportError, match=r"Could not write the model to .*new \(disk full\); nothing was left"):
        export_policy(trained, settings, TRAINED, exports / "new")
    assert list(exports.iterdir()) == []
    old = exports / "old"
    old.mkdir()
    (old / "keep.txt").write_text("previous export")
    (old / PROVENANCE_FILE).write_text("{}")  # an earlier export, which --force may replace
    with pytest.raises(PolicyExportError, match="disk full.*the folder that was there is unchanged"):
        export_policy(trained, settings, TRAINED, old, overwrite=True)
    assert [p.name for p in exports.iterdir()] == ["old"]
    assert sorted(p.name for p in old.iterdir()) == ["keep.txt", PROVENANCE_FILE]


def test_policy_summaries_count_lists_and_carry_the_round_verdict(trained):
    seed_store(trained, n_pairs=6)  # "seed-policy": 12 lists, every third one (per side) invalid
    invalid = sum(1 for k in range(6) for b in (0, 1) if (k + b) % 3 == 0)
    by_id = {s.policy_id: s for s in policy_summaries(trained)}
    assert set(by_id) == {"zero", TRAINED, "seed-policy"}
    seed = by_id["seed-policy"]
    assert (seed.n_lists, seed.n_valid, seed.kind) == (12, 12 - invalid, "baseline")
    assert seed.validity == pytest.approx((12 - invalid) / 12)
    assert by_id[TRAINED].verdict.startswith("better: +0.030") and by_id[TRAINED].parent_id == "zero"
    assert by_id["zero"].n_lists == 0 and by_id["zero"].validity is None and by_id["zero"].verdict is None


@pytest.fixture
def cli(settings, monkeypatch):
    """``recfeedback`` through typer's runner, on the test's store (process-wide caches cleared around it)."""
    from rlhf import runtime
    from rlhf.cli import app
    from rlhf.settings import get_settings

    monkeypatch.setenv("RECFEEDBACK_STORE__DATA_DIR", str(settings.store.data_dir))
    get_settings.cache_clear()
    runtime._open_store.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, list(args))
    get_settings.cache_clear()
    runtime._open_store.cache_clear()


def test_policy_commands(trained, cli, tmp_path):
    listed = cli("policy", "list")
    assert listed.exit_code == 0, listed.output
    assert f"{TRAINED}  round={ROUND} parent=zero  lists=0 valid=- (of all its lists)" in listed.output
    assert "NDCG vs zero-shot, paired: better: +0.030 [+0.010, +0.050] over 40 shoppers" in listed.output
    as_json = json.loads(cli("policy", "list", "--json").output)
    assert {p["policy_id"]: p["validity"] for p in as_json} == {"zero": None, TRAINED: None}
    out = tmp_path / "exported"
    done = cli("policy", "export", TRAINED, "--out", str(out), "--dtype", "bfloat16")
    assert done.exit_code == 0, done.output
    assert f"Exported {TRAINED} to {out}: the base model with its LoRA adapter merged in" in done.output
    assert "in bfloat16" in done.output and (out / "config.json").is_file()
    refused = cli("policy", "export", TRAINED, "--out", str(out))
    assert refused.exit_code == 1 and "already has files in it" in refused.output and "Traceback" not in refused.output
