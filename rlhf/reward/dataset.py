"""The reward model's dataset, built from a store snapshot (never from the live store).

One example per usable judgement, in TRL's preference format: ``prompt`` (the exact chat prompt the
policy saw, re-rendered by :func:`rlhf.prompts.render_prompt` with the policy tokenizer), ``chosen`` and
``rejected`` (the raw texts of the two generations) and ``margin`` (from the strength).

Rules (each documented here and counted in :attr:`RewardDataset.counts`):

- **Current labels only**: the snapshot already leaves retracted labels out. When an annotator judged a
  pair twice (a re-show, which measures consistency), their first judgement counts.
- **Aggregation** (``reward_model.aggregation``): ``"none"`` keeps one example per label; ``"majority"``
  (default) turns the votes on a pair into one example: the most frequent of A / B / tie / both_bad, with
  an A-vs-B draw counting as a tie. ``"dawid_skene"``/``"mace"`` weigh annotators by their estimated
  reliability. All three are :mod:`rlhf.aggregation`'s (the swap point is :func:`aggregate_labels`).
- **Strength -> margin**: TRL's loss is ``-log σ(r_chosen - r_rejected - margin)``, so a margin asks for a
  wider score gap. ``margin_by_strength`` maps strength 1/2/3 (slightly / clearly / much better) to
  0.0 / 0.5 / 1.0 by default; an aggregated pair takes the median strength of its winning votes (rounded
  down). ``use_margin = False`` drops the column (plain Bradley–Terry).
- **Ties and "both bad"** (``reward_model.tie_rule``): ``"drop"`` removes ties from training; ``"soft"``
  keeps a tie as two mirrored examples with margin 0 (their losses pull both scores together). "Both bad"
  says nothing about which list is better and is always dropped. Neither enters accuracy.
- **Gold pairs** (``pairs.is_gold`` or a row in ``gold``) never enter training or the held-out split;
  they form a separate ``gold`` split scored against the expected answer.
- **Held-out split by context**: a context's examples are all in ``train`` or all in ``heldout``,
  decided by a hash of the context id (:func:`context_split`), so the split is deterministic and stable
  across rounds: a context held out once stays held out as labels grow.
- **Held-out shoppers are never trained on**: a pair on a context of the contexts' own ``heldout`` split
  (the shoppers offline evaluation scores policies on, by what they bought later) goes to ``heldout``
  whatever its hash. Rounds ask about them only to measure (``rounds.human_eval_pairs``), as does
  ``pairs make`` over a round's evaluation lists; a reward model trained on their labels would be judged
  on the shoppers it learned from.
- **Which held-out pairs a model chose** (``chosen_by_model``, from :func:`rlhf.active.chosen_without_a_model`):
  a round's active selection asks where its reward model saw little difference, and the next reward model
  is measurably less accurate on such pairs than on random ones (``benchmarks/loop_parts_bench.py``,
  section 2c). Evaluation reports the held-out accuracy on the other pairs too, a figure that does not
  drift down as rounds add chosen pairs.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from rlhf.active import chosen_without_a_model
from rlhf.errors import RecFeedbackError
from rlhf.prompts import prompt_fingerprint
from storage.snapshot import Snapshot

if TYPE_CHECKING:
    from rlhf.settings import Settings

log = logging.getLogger(__name__)

EXAMPLE_COLUMNS = (
    "prompt", "chosen", "rejected", "margin", "pair_id", "context_id", "chosen_side", "chosen_gen",
    "rejected_gen", "strength", "n_labels", "agreement", "is_tie", "split",
)
PAIR_COLUMNS = ("pair_id", "context_id", "gen_a", "gen_b", "prompt", "text_a", "text_b", "split", "is_gold",
                "chosen_by_model")

#: (context_id, generation) -> prompt text. The default re-renders the policy prompt.
PromptFn = Callable[[str], str]


@dataclass
class RewardDataset:
    """Examples per split plus what evaluation needs (pair texts, raw labels) and the counts of each rule."""

    train: pd.DataFrame
    heldout: pd.DataFrame
    gold: pd.DataFrame
    pairs: pd.DataFrame
    labels: pd.DataFrame
    counts: dict[str, Any] = field(default_factory=dict)
    snapshot_id: str | None = None

    def split(self, name: str) -> pd.DataFrame:
        return {"train": self.train, "heldout": self.heldout, "gold": self.gold}[name]


def context_split(context_id: str, heldout_fraction: float) -> str:
    """'heldout' or 'train' for a context, from a hash of its id (deterministic, stable across runs)."""
    digest = hashlib.sha256(str(context_id).encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "heldout" if u < heldout_fraction else "train"


def strength_margin(strength: float | None, margin_by_strength: tuple[float, ...]) -> float:
    """The Bradley–Terry margin for a strength 1..3 (None or out of range: the smallest margin)."""
    if strength is None or pd.isna(strength):
        return float(margin_by_strength[0])
    index = min(max(int(strength), 1), len(margin_by_strength)) - 1
    return float(margin_by_strength[index])


def first_judgements(labels: pd.DataFrame) -> pd.DataFrame:
    """One label per (pair, annotator): the first non-re-show one (else the first), by time."""
    if labels.empty:
        return labels
    ordered = labels.sort_values(["is_reshow", "created_at", "label_id"], kind="stable")
    return ordered.drop_duplicates(["pair_id", "annotator_id"], keep="first").sort_values(["pair_id", "created_at"])


def aggregate_labels(labels: pd.DataFrame, method: str) -> pd.DataFrame:
    """``labels`` (one per pair and annotator) -> the examples' targets: pair_id, choice, strength, n_labels,
    agreement (the share of the pair's labels equal to the choice).

    ``none`` keeps one row per label; every other method is :func:`rlhf.aggregation.aggregate_pairs`, the
    aggregation the Agreement page reports, so the reward model learns from the answers managers see.
    """
    if labels.empty:
        return pd.DataFrame(columns=["pair_id", "choice", "strength", "n_labels", "agreement"])
    if method == "none":
        out = labels[["pair_id", "choice", "strength"]].copy()
        out["n_labels"] = 1
        out["agreement"] = 1.0
        return out.reset_index(drop=True)
    from rlhf.aggregation import aggregate_pairs

    return aggregate_pairs(labels, method)[["pair_id", "choice", "strength", "n_labels", "agreement"]]


def policy_prompt_renderer(snapshot: Snapshot, settings: Settings, tokenizer: Any | None = None) -> PromptFn:
    """A function context_id -> the exact prompt the policy saw (:func:`rlhf.prompts.render_prompt`).

    The policy tokenizer's chat template is applied, with the list length and token budget from the
    settings. Results are cached per context.
    """
    from rlhf.models import load_tokenizer
    from rlhf.prompts import make_view, render_prompt

    tokenizer = tokenizer or load_tokenizer(settings.model.tokenizer or settings.model.policy)
    contexts = snapshot.context_records()
    items = snapshot.catalog_records()
    cache: dict[str, str] = {}

    def render(context_id: str) -> str:
        if context_id not in cache:
            c = contexts.get(context_id)
            if c is None:
                raise KeyError(context_id)
            view = make_view(
                c.context_id, c.shopper_id,
                [items[i] for i in c.history if i in items], [items[i] for i in c.candidates if i in items],
                attributes=settings.contexts.item_attributes,
            )
            cache[context_id] = render_prompt(
                tokenizer, view, settings.generation.list_length, settings.generation.max_prompt_tokens
            )
        return cache[context_id]

    return render


def build_reward_dataset(
    snapshot: Snapshot,
    settings: Settings,
    *,
    prompt_fn: PromptFn | None = None,
    policy_tokenizer: Any | None = None,
) -> RewardDataset:
    """Examples for training and evaluation from a snapshot, following the rules in the module docstring."""
    rm = settings.reward_model
    labels = snapshot.table("labels")
    pairs = snapshot.table("pairs").set_index("pair_id", drop=False)
    gens = snapshot.table("generations").set_index("generation_id", drop=False)
    gold_table = snapshot.table("gold") if "gold" in snapshot.tables else pd.DataFrame(columns=["pair_id"])
    gold_expected = dict(zip(gold_table["pair_id"], gold_table.get("expected_choice", [])))
    counts: Counter[str] = Counter()
    counts["labels_current"] = len(labels)
    contexts = snapshot.table("contexts") if "contexts" in snapshot.tables else pd.DataFrame()
    held_shoppers = (set(contexts.loc[contexts["split"] == "heldout", "context_id"])
                     if "split" in contexts.columns else set())

    render = prompt_fn or policy_prompt_renderer(snapshot, settings, policy_tokenizer)

    # Pair texts for every labelled or gold pair we can reconstruct.
    wanted = sorted(set(labels["pair_id"]) | set(gold_expected))
    pair_rows = []
    for pair_id in wanted:
        if pair_id not in pairs.index:
            counts["pairs_missing"] += 1
            continue
        p = pairs.loc[pair_id]
        if p["gen_a"] not in gens.index or p["gen_b"] not in gens.index:
            counts["pairs_without_generations"] += 1
            continue
        context_id = p["context_id"]
        if context_id is None or pd.isna(context_id):
            context_id = gens.loc[p["gen_a"], "context_id"]
        try:
            prompt = render(context_id)
        except KeyError:
            counts["pairs_without_context"] += 1
            continue
        except RecFeedbackError as exc:  # e.g. PromptTooLongError under the current settings
            log.warning("Pair %s skipped: %s", pair_id, exc)
            counts["pairs_prompt_unrenderable"] += 1
            continue
        for gen_id in (p["gen_a"], p["gen_b"]):
            # Generations store a fingerprint of the prompt they were sampled from: check we re-rendered it.
            sampling = gens.loc[gen_id, "sampling"]
            stored = sampling.get("prompt_sha1") if isinstance(sampling, dict) else None
            if stored is not None:
                counts["prompt_fingerprint_checked"] += 1
                if stored != prompt_fingerprint(prompt):
                    counts["prompt_fingerprint_mismatch"] += 1
        is_gold = bool(p["is_gold"]) or pair_id in gold_expected
        if context_id in held_shoppers and not is_gold:
            counts["pairs_on_heldout_shoppers"] += 1
        pair_rows.append({
            "pair_id": pair_id, "context_id": context_id, "gen_a": p["gen_a"], "gen_b": p["gen_b"],
            "prompt": prompt, "text_a": gens.loc[p["gen_a"], "raw_text"], "text_b": gens.loc[p["gen_b"], "raw_text"],
            "split": ("gold" if is_gold else "heldout" if context_id in held_shoppers
                      else context_split(context_id, rm.heldout_fraction)), "is_gold": is_gold,
            "chosen_by_model": not chosen_without_a_model(p.get("strategy"), p.get("selection_reason")),
        })
    pair_frame = pd.DataFrame(pair_rows, columns=list(PAIR_COLUMNS))
    if counts["prompt_fingerprint_mismatch"]:
        log.warning(
            "%d of %d generations were sampled from a prompt that differs from today's rendering (prompt "
            "settings or wording changed since); the reward model sees today's prompt.",
            counts["prompt_fingerprint_mismatch"], counts["prompt_fingerprint_checked"],
        )
    usable = set(pair_frame["pair_id"])

    judged = first_judgements(labels[labels["pair_id"].isin(usable)])
    counts["labels_repeat_judgements_ignored"] = int(labels["pair_id"].isin(usable).sum() - len(judged))
    split_of = dict(zip(pair_frame["pair_id"], pair_frame["split"]))
    judged = judged.assign(split=judged["pair_id"].map(split_of))
    counts["labels_on_gold_pairs"] = int((judged["split"] == "gold").sum())

    by_pair = pair_frame.set_index("pair_id")
    examples: dict[str, list[dict[str, Any]]] = {"train": [], "heldout": [], "gold": []}
    non_gold = judged[judged["split"] != "gold"]
    aggregated = aggregate_labels(non_gold, rm.aggregation)
    for row in aggregated.itertuples(index=False):
        pair = by_pair.loc[row.pair_id]
        split = pair["split"]
        choice = row.choice
        counts[f"outcome_{choice}"] += 1
        if choice == "both_bad":
            counts["dropped_both_bad"] += 1
            continue
        if choice == "tie":
            if rm.tie_rule == "soft" and split == "train":
                for side in ("A", "B"):
                    examples[split].append(_example(pair, row.pair_id, side, None, row, rm, is_tie=True))
                counts["ties_as_mirrored_pairs"] += 1
            else:
                counts["dropped_ties"] += 1
            continue
        if choice not in ("A", "B"):
            counts["dropped_unknown_choice"] += 1
            continue
        examples[split].append(_example(pair, row.pair_id, choice, row.strength, row, rm, is_tie=False))

    for pair in pair_frame[pair_frame["split"] == "gold"].itertuples(index=False):
        expected = gold_expected.get(pair.pair_id)
        if expected not in ("A", "B"):
            counts["gold_without_ab_answer"] += 1
            continue
        summary = _Summary(n_labels=int((judged["pair_id"] == pair.pair_id).sum()), agreement=float("nan"))
        examples["gold"].append(_example(by_pair.loc[pair.pair_id], pair.pair_id, expected, None, summary, rm,
                                         is_tie=False))

    frames = {name: pd.DataFrame(rows, columns=list(EXAMPLE_COLUMNS)) for name, rows in examples.items()}
    for name, frame in frames.items():
        frame["split"] = name
        if not rm.use_margin:
            frames[name] = frame.drop(columns=["margin"])
        counts[f"examples_{name}"] = len(frame)
    counts["contexts_train"] = int(frames["train"]["context_id"].nunique())
    counts["contexts_heldout"] = int(frames["heldout"]["context_id"].nunique())
    counts["annotators"] = int(judged["annotator_id"].nunique())
    return RewardDataset(
        train=frames["train"], heldout=frames["heldout"], gold=frames["gold"], pairs=pair_frame,
        labels=judged.reset_index(drop=True), counts=dict(counts), snapshot_id=snapshot.snapshot_id,
    )


@dataclass(frozen=True)
class _Summary:
    n_labels: int
    agreement: float


def _example(pair: pd.Series, pair_id: str, side: str, strength: Any, row: Any, rm: Any, *, is_tie: bool) -> dict:
    chosen_text, rejected_text = (pair["text_a"], pair["text_b"]) if side == "A" else (pair["text_b"], pair["text_a"])
    chosen_gen, rejected_gen = (pair["gen_a"], pair["gen_b"]) if side == "A" else (pair["gen_b"], pair["gen_a"])
    strength = None if strength is None or pd.isna(strength) else int(strength)
    return {
        "prompt": pair["prompt"], "chosen": chosen_text, "rejected": rejected_text,
        "margin": 0.0 if is_tie else strength_margin(strength, rm.margin_by_strength),
        "pair_id": pair_id, "context_id": pair["context_id"], "chosen_side": side, "chosen_gen": chosen_gen,
        "rejected_gen": rejected_gen, "strength": strength, "n_labels": int(row.n_labels),
        "agreement": float(row.agreement) if row.agreement is not None else float("nan"),
        "is_tie": is_tie, "split": "",
    }


def to_trl_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The TRL preference columns only (``prompt``, ``chosen``, ``rejected`` and ``margin`` if present)."""
    columns = [c for c in ("prompt", "chosen", "rejected", "margin") if c in frame]
    return frame[columns].to_dict("records")
