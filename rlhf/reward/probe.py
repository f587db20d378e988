"""The small-data reward model: a Bradley–Terry linear head on a FROZEN encoder's sentence embeddings.

Why it exists: on the demo shop the LoRA reward model (:mod:`rlhf.reward.train`) is at chance on held-out
shoppers after 300 crowd labels and needs on the order of a thousand or more, while a linear head on
frozen MiniLM embeddings learns from the same 300 labels (``benchmarks/results/reward_model.md``). A
round's reward model sees tens to hundreds of labels in the loop's first rounds, so there the probe is
the reward model; ``reward_model.method = "auto"`` hands over to LoRA at ``probe_max_examples`` labels.
Frozen embeddings plus a light head as a reward model are studied by Sun et al. (2025), "Reusing
Embeddings: Reproducible Reward Model Research in Large Language Model Alignment without GPUs".

Model: ``r(prompt, answer) = w · e(answer)``, ``e`` the L2-normalised mean of the encoder's last hidden
states over the answer as :func:`rlhf.reward.inputs.reward_inputs` writes it in ``probe_input_format``
(by default ``resolved``: each ``C07`` followed by its description from the prompt). Training minimises
the convex Bradley–Terry objective with the same strength margins as TRL's loss::

    sum_i softplus(margin_i - w · (e(chosen_i) - e(rejected_i)))  +  probe_l2 · |w|²

to its optimum with L-BFGS: deterministic, seconds on a CPU, no learning-rate or epoch choices. The
encoder is never changed, so a saved model is only the head (``head.safetensors``) and the card.

With ``reward_model.probe_match_features`` (the default) the head also reads three numbers that depend
on the shopper, :mod:`rlhf.reward.match` (the listed items' retrieval ranks and their similarity to the
shopper's earlier purchases), so ``r = w · [e(answer), match(prompt, answer)]``; with
``reward_model.probe_reason_features`` also how well each reason fits its item, after any product line
it copies (``reason_fit_after_copy``). The card records which features a head was fitted on (a head fitted
on the older ``reason_fit`` still reads it); heads saved before the match features existed read the answer
alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlhf.reward.backbones import Backbone, load_tokenizer_for
from rlhf.reward.inputs import reward_inputs
from rlhf.reward.match import ALL_FEATURES, MATCH_FEATURES, REASON_FEATURES, match_features
from rlhf.reward.score import RewardScorer

if TYPE_CHECKING:
    import pandas as pd

    from rlhf.reward.train import TrainResult
    from rlhf.settings import Settings

log = logging.getLogger(__name__)

HEAD_FILE = "head.safetensors"
OBJECTIVE = "Bradley-Terry pairwise loss with strength margins, linear head on frozen mean-pooled embeddings (L-BFGS)"


def load_encoder(backbone: Backbone, *, device: str = "cpu", tokenizer: Any | None = None) -> tuple[Any, Any]:
    """(frozen ``AutoModel`` in eval mode, its prepared tokenizer) for embedding answers."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from rlhf.errors import ModelNotFoundError
    from rlhf.models import pick_device

    tokenizer = tokenizer or load_tokenizer_for(backbone)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModel.from_pretrained(backbone.location, local_files_only=True)
    except OSError as exc:
        raise ModelNotFoundError(f"Cannot load encoder {backbone.name!r} from {backbone.location}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    model.requires_grad_(False)
    dev = pick_device(device)
    if dev != "cpu":
        model.to(dev)
    return model.eval(), tokenizer


class ProbeScorer(RewardScorer):
    """A :class:`RewardScorer` whose score is ``w · features(prompt, answer)`` (see the module docstring).

    ``encode`` gives the answer's token ids (the prompt only decides how the answer is rewritten);
    :meth:`features` embeds them with the frozen encoder and appends the ``match`` columns
    (:mod:`rlhf.reward.match`, none by default), which need the prompt too.
    """

    def __init__(
        self, model: Any, tokenizer: Any, weight: np.ndarray, *, match: Sequence[str] = (), **kwargs: Any
    ) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.weight = np.asarray(weight, dtype=np.float32)
        self.match: tuple[str, ...] = tuple(match)
        self._line_vectors: dict[str, np.ndarray] = {}  # the frozen encoder's view of prompt lines, by text

    def features(
        self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """``[n, d]``: what the head reads for each (prompt, answer)."""
        embedded = self.embed_ids(self.encode(prompts, responses), batch_size, progress)
        if not self.match:
            return embedded
        return np.hstack([embedded, match_features(prompts, responses, self.embed_lines, columns=self.match,
                                                   embed_reasons=self.embed_texts)])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of short texts, not cached (reasons are new in every batch)."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        return self._embed([list(x) for x in ids], 64, False)

    def embed_lines(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of short prompt lines (candidates, earlier purchases); each text is
        embedded once per scorer, since PPO and selection score the same prompts over and over."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._line_vectors]
        if missing:
            ids = self.tokenizer(missing, truncation=True, max_length=self.max_length)["input_ids"]
            self._line_vectors.update(zip(missing, self._embed([list(x) for x in ids], 64, False)))
        width = int(self.model.config.hidden_size)
        return np.array([self._line_vectors[t] for t in texts], dtype=np.float32).reshape(len(texts), width)

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        return (self.features(prompts, responses, batch_size, progress) @ self.weight).astype(np.float32)

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list[list[int]]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
        answers = [reward_inputs(p, r, self.input_format)[1] for p, r in zip(prompts, responses)]
        return [
            list(ids) for ids in
            self.tokenizer(answers, truncation=True, max_length=self.max_length)["input_ids"]
        ]

    def embed_ids(self, encoded: Sequence[Sequence[int]], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Unit-length mean-pooled embeddings of already-encoded answers, in input order; each distinct
        answer is embedded once (pair tables and training frames repeat lists)."""
        slot: dict[tuple[int, ...], int] = {}
        where = np.asarray([slot.setdefault(tuple(ids), len(slot)) for ids in encoded], dtype=np.int64)
        unique = self._embed([list(k) for k in slot], batch_size, progress)
        return unique[where] if len(where) else unique

    def _embed(self, encoded: Sequence[Sequence[int]], batch_size: int, progress: bool) -> np.ndarray:
        import torch

        n = len(encoded)
        width = int(self.model.config.hidden_size)
        out = np.zeros((n, width), dtype=np.float32)
        if n == 0:
            return out
        order = sorted(range(n), key=lambda i: len(encoded[i]), reverse=True)
        pad = int(self.tokenizer.pad_token_id)
        starts: Any = range(0, n, max(1, batch_size))
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Embedding", unit="batch")
        with torch.inference_mode():
            for start in starts:
                idx = order[start:start + batch_size]
                longest = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), longest), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), longest), dtype=torch.float32)
                for row, i in enumerate(idx):
                    ids[row, : len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
                    mask[row, : len(encoded[i])] = 1.0
                hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
                m = mask.to(hidden.device).unsqueeze(-1)
                pooled = (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1.0)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return out

    def score_ids(self, encoded: Sequence[Sequence[int]], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if self.match:
            raise TypeError("A probe with match features scores (prompt, answer) texts: call score(), not score_ids().")
        return (self.embed_ids(encoded, batch_size, progress) @ self.weight).astype(np.float32)


def new_probe_scorer(settings: Settings, backbone: Backbone, *, device: str = "cpu") -> ProbeScorer:
    """An untrained probe (zero head) on ``backbone``, reading answers as ``settings.reward_model`` says."""
    rm = settings.reward_model
    model, tokenizer = load_encoder(backbone, device=device)
    columns = (MATCH_FEATURES if rm.probe_match_features else ()) + (REASON_FEATURES if rm.probe_reason_features else ())
    width = int(model.config.hidden_size) + len(columns)
    return ProbeScorer(model, tokenizer, np.zeros(width, dtype=np.float32), match=columns,
                       kind=backbone.kind, max_length=min(rm.probe_max_length, _position_limit(model)),
                       input_format=rm.probe_input_format)


def fit_bradley_terry(
    diffs: np.ndarray, margins: np.ndarray | None = None, l2: float = 0.25, max_iter: int = 500
) -> tuple[np.ndarray, list[float]]:
    """The weight minimising ``sum softplus(margin - diffs @ w) + l2 * |w|²`` and the loss before/after.

    Convex, so L-BFGS reaches the one optimum from zero; the losses are per example (mean), for the card.
    """
    import torch

    x = torch.tensor(np.asarray(diffs, dtype=np.float64))
    m = torch.zeros(len(x), dtype=torch.float64) if margins is None else torch.tensor(
        np.asarray(margins, dtype=np.float64))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def objective() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.softplus(m - x @ w).sum() + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.no_grad():
        first = float(torch.nn.functional.softplus(m - x @ w).mean())
    opt.step(objective)
    with torch.no_grad():
        final = float(torch.nn.functional.softplus(m - x @ w).mean())
    return w.detach().numpy().astype(np.float32), [first, final]


def train_probe(
    train: pd.DataFrame, *, settings: Settings, output_dir: str | Path, backbone: Backbone, progress: bool = True
) -> TrainResult:
    """Fit the probe on ``train`` (prompt / chosen / rejected [/ margin]) and return it like a LoRA run."""
    from rlhf.models import pick_device
    from rlhf.reward.train import TrainResult, peak_rss_mb

    rm = settings.reward_model
    device = pick_device(rm.device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    scorer = new_probe_scorer(settings, backbone, device=device)
    started = time.perf_counter()
    n = len(train)
    prompts = train["prompt"].tolist() if "prompt" in train else [""] * n
    feats = scorer.features([*prompts, *prompts], [*train["chosen"], *train["rejected"]],
                            batch_size=rm.eval_batch_size, progress=progress)
    chosen, rejected = feats[:n], feats[n:]
    margins = train["margin"].to_numpy(dtype=float) if "margin" in train else None
    scorer.weight, losses = fit_bradley_terry(chosen - rejected, margins, l2=rm.probe_l2)
    seconds = time.perf_counter() - started
    log.info("Probe reward model fitted on %d pairs in %.1f s (loss %.3f -> %.3f)", n, seconds, *losses)
    return TrainResult(
        model=scorer.model, tokenizer=scorer.tokenizer, backbone=backbone, scorer=scorer, output_dir=output_dir, n_train=n,
        train_seconds=seconds, pairs_per_second=n / seconds if seconds > 0 else float("nan"),
        peak_rss_mb=peak_rss_mb(), device=device,
        history=[{"step": 0, "loss": losses[0]}, {"step": 1, "loss": losses[1]}], method="probe",
    )


def _position_limit(model: Any) -> int:
    return int(getattr(model.config, "max_position_embeddings", None) or 10**9)


def save_probe_head(scorer: ProbeScorer, folder: Path) -> None:
    """Write the head next to the card (the encoder is the unchanged backbone)."""
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.from_numpy(np.ascontiguousarray(scorer.weight))}, str(folder / HEAD_FILE))


def load_probe(folder: Path, card: dict[str, Any], backbone: Backbone, *, device: str = "auto") -> ProbeScorer:
    """A :class:`ProbeScorer` from a registry folder written by :func:`save_probe_head`."""
    from safetensors.torch import load_file

    from rlhf.errors import ModelNotFoundError

    head = folder / HEAD_FILE
    if not head.is_file():
        raise ModelNotFoundError(f"{folder} is a probe reward model without its head ({HEAD_FILE}).")
    tokenizer = load_tokenizer_for(backbone, str(folder / "tokenizer"))
    model, tokenizer = load_encoder(backbone, device=device, tokenizer=tokenizer)
    weight = load_file(str(head))["weight"].numpy()
    training = card.get("training", {})
    match = tuple(training.get("match_features") or ())  # absent in cards from before the match features
    unknown = [c for c in match if c not in ALL_FEATURES]
    if unknown:
        raise ModelNotFoundError(f"The probe in {folder} reads features this version does not know: {unknown}.")
    width = int(model.config.hidden_size) + len(match)
    if weight.shape != (width,):
        raise ModelNotFoundError(
            f"The probe head in {folder} has shape {tuple(weight.shape)}; the encoder"
            f"{' and the match features' if match else ''} give {width} features."
        )
    return ProbeScorer(model, tokenizer, weight, match=match, kind=backbone.kind, max_length=int(training["max_length"]),
                       rm_id=card["rm_id"], card=card, input_format=training.get("input_format", "policy"))
