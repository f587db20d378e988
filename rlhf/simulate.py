"""Simulated annotators: a crowd that labels A/B pairs from a known ground truth.

Used for demos, load tests and label-efficiency measurements. Each list gets a true utility from a
``utility_fn(context, items) -> float`` (the demo shop's hidden preferences, or on real data the
shopper's purchases after the context's time, see :func:`purchase_utility`). Each simulated annotator
then answers like a person would, with their own flaws:

- a Bradley–Terry draw, P(left) = sigmoid((u_left − u_right) / temperature), with a personal
  temperature (noise);
- position bias: with a small probability they pick the left list without reading; lapses: with a
  small probability they answer at random;
- ties: when the two utilities are within ``tie_margin`` they may answer "tie"; when both lists are
  worthless (at or below the utility's floor) they may answer "both bad";
- strength (slightly / clearly / much better) grows with |gap| / temperature;
- speed: seconds per label drawn from a log-normal around a personal median;
- spammers: some answer at random, or always pick the left list, and do so fast;
- reasons (optional, ``reason_penalty`` > 0): careful annotators also read each item's reason, and a list
  whose reasons are about something else, or only copy a product's line from the prompt
  (:func:`rlhf.reasons.off_topic_share`), is worth less to them: ``reason_penalty`` utility-scale units for
  a list whose every reason is such. The issue's ground truth is items only, so the default is 0; real
  labellers judge the reasons as well.

Temperatures and margins are in units of the task's *utility scale* (the spread of utility gaps among
the pairs being labelled), so one crowd definition means the same difficulty on the demo shop and on
real data. The default crowd is calibrated so that two annotators on the same pair agree about 75% of
the time (raw pairwise agreement; InstructGPT reports 72.6 ± 1.5% for its labellers), which keeps
label-efficiency figures honest. :func:`raw_agreement` measures it.

Simulated annotators label through the same service functions as the browser (:mod:`rlhf.annotation`),
see :func:`run_simulation`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

#: The source of the labels the simulated crowd gives (the Agreement page filters on it; people's are 'app').
SIMULATED_SOURCE = "simulated"

Behaviour = Literal["bt", "random", "always_left"]
CrowdKind = Literal["default", "clean", "noisy"]
CROWD_KINDS: tuple[str, ...] = ("default", "clean", "noisy")

#: ``utility_fn(context, item_ids) -> float``: the true value of a list for a context.
UtilityFn = Callable[[Any, Sequence[str]], float]


@dataclass(frozen=True)
class AnnotatorProfile:
    """How one simulated annotator behaves. Utility-valued fields are in units of the utility scale."""

    name: str
    behaviour: Behaviour = "bt"
    temperature: float = 0.5
    left_bias: float = 0.05
    lapse: float = 0.03
    tie_margin: float = 0.05
    tie_prob: float = 0.5
    both_bad_prob: float = 0.6
    speed_median_s: float = 14.0
    speed_sigma: float = 0.45

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"{self.name}: temperature must be positive.")
        for name in ("left_bias", "lapse", "tie_prob", "both_bad_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{self.name}: {name} must be within [0, 1], not {value}.")


@dataclass(frozen=True)
class Judgment:
    """One simulated answer, in screen terms: ``side`` is 'left', 'right', 'tie' or 'both_bad'."""

    side: str
    strength: int | None
    seconds: float


# -- the crowd -------------------------------------------------------------------------------------

#: Per kind: (typical temperature, share of random spammers, share of always-left spammers,
#: typical left bias, typical lapse rate). The default's temperature is only a starting point:
#: :func:`make_crowd` calibrates it (see :func:`calibrate_crowd`) to ~0.75 raw pairwise agreement on
#: :func:`synthetic_utility_pairs`. 'clean' is an unrealistically good crowd (~0.93 agreement, ~95%
#: right), 'noisy' a poor one (~0.55 agreement, ~65% right); see benchmarks/results/loop_parts.md.
_CROWDS: dict[str, tuple[float, float, float, float, float]] = {
    "default": (0.16, 0.05, 0.03, 0.04, 0.03),
    "clean": (0.08, 0.0, 0.0, 0.0, 0.0),
    "noisy": (0.6, 0.12, 0.08, 0.10, 0.08),
}


#: Raw pairwise agreement the default crowd is calibrated to (InstructGPT: 72.6 ± 1.5%; brief: 73–77%).
DEFAULT_TARGET_AGREEMENT = 0.75


def make_crowd(
    n: int,
    kind: CrowdKind = "default",
    *,
    seed: int = 0,
    prefix: str = "sim",
    target_agreement: float | None = None,
) -> list[AnnotatorProfile]:
    """``n`` annotator profiles of a crowd kind, reproducible from the seed.

    Spammer counts are the expected shares rounded, but a crowd of 10 or more has at least one random
    spammer in 'default' and 'noisy' (real crowds always do). Careful annotators differ: temperatures are
    log-normal around the kind's typical value, position bias, lapses and speed vary per person.

    Because a small crowd may have no spammer at all, the 'default' crowd is then *calibrated*: the
    careful annotators' temperatures are scaled together until :func:`raw_agreement` on
    :func:`synthetic_utility_pairs` is ``target_agreement`` (default 0.75), whatever the crowd's size and
    composition. Pass ``target_agreement`` to calibrate another kind, or 0 to switch calibration off.
    """
    if kind not in _CROWDS:
        raise ValueError(f"Unknown crowd {kind!r}; choose one of {', '.join(CROWD_KINDS)}.")
    if n < 1:
        raise ValueError("A crowd needs at least one annotator.")
    temperature, random_share, left_share, left_bias, lapse = _CROWDS[kind]
    rng = np.random.default_rng(seed)
    n_random = math.floor(n * random_share + 0.5)
    n_left = math.floor(n * left_share + 0.5)
    if kind != "clean" and n >= 10:
        n_random = max(n_random, 1)
    behaviours: list[Behaviour] = ["random"] * n_random + ["always_left"] * n_left
    behaviours += ["bt"] * (n - len(behaviours))
    behaviours = [behaviours[i] for i in rng.permutation(n)]
    width = max(2, len(str(n)))
    crowd = []
    for i, behaviour in enumerate(behaviours):
        spammer = behaviour != "bt"
        crowd.append(
            AnnotatorProfile(
                name=f"{prefix}_{kind}_{i:0{width}d}",
                behaviour=behaviour,
                temperature=float(temperature * math.exp(rng.normal(0.0, 0.3))) if kind != "clean" else temperature,
                left_bias=float(np.clip(rng.normal(left_bias, left_bias / 2), 0.0, 0.5)) if left_bias else 0.0,
                lapse=float(np.clip(rng.normal(lapse, lapse / 2), 0.0, 0.5)) if lapse else 0.0,
                tie_margin=0.05,
                tie_prob=float(rng.uniform(0.2, 0.6)),
                both_bad_prob=float(rng.uniform(0.4, 0.8)),
                speed_median_s=float(rng.uniform(2.0, 3.5) if spammer else rng.uniform(8.0, 25.0)),
                speed_sigma=0.45,
            )
        )
    target = DEFAULT_TARGET_AGREEMENT if (target_agreement is None and kind == "default") else target_agreement
    if target and n >= 2:
        crowd = calibrate_crowd(crowd, target, seed=seed)
    return crowd


def calibrate_crowd(
    crowd: Sequence[AnnotatorProfile],
    target: float,
    *,
    seed: int = 0,
    n_pairs: int = 2000,
    steps: int = 11,
    utilities: np.ndarray | None = None,
    floor: float | None = None,
) -> list[AnnotatorProfile]:
    """Scale the careful annotators' temperatures together so that raw agreement is ``target``.

    Calibrates on :func:`synthetic_utility_pairs` unless ``utilities`` (``[n, 2]``, e.g. the task's own
    pairs, with its ``floor``) are given. Bisection on the log of a common factor, with common random
    numbers (the same pairs and draws at every step) so that agreement falls monotonically as the
    factor grows. If the target is out of reach (too many spammers, or many pairs with no difference at
    all) the closest end is returned: check with :func:`raw_agreement`.
    """
    if not 0.0 < target < 1.0:
        raise ValueError("The target agreement must be between 0 and 1.")
    if utilities is None:
        utilities = synthetic_utility_pairs(n_pairs, seed=seed + 9173)
    per_pair = min(3, len(crowd))

    def scaled(factor: float) -> list[AnnotatorProfile]:
        return [replace(p, temperature=p.temperature * factor) if p.behaviour == "bt" else p for p in crowd]

    lo, hi = math.log(0.05), math.log(40.0)
    for _ in range(steps):
        mid = (lo + hi) / 2
        agreement = raw_agreement(scaled(math.exp(mid)), utilities, labels_per_pair=per_pair, seed=seed, floor=floor)
        if agreement > target:
            lo = mid
        else:
            hi = mid
    return scaled(math.exp((lo + hi) / 2))


def judge(
    profile: AnnotatorProfile,
    u_left: float,
    u_right: float,
    rng: np.random.Generator,
    *,
    scale: float = 1.0,
    floor: float | None = None,
) -> Judgment:
    """One annotator's answer for two lists shown left and right, with true utilities ``u_*``.

    ``scale`` converts the profile's temperature and tie margin into utility units; ``floor`` is the
    utility of a worthless list (``None`` when the utility has none): when both lists are at or below
    it, a careful annotator may say "both bad".
    """
    if scale <= 0 or not math.isfinite(scale):
        raise ValueError(f"The utility scale must be a positive number, not {scale}.")
    seconds = float(profile.speed_median_s * math.exp(rng.normal(0.0, profile.speed_sigma)))
    if profile.behaviour == "always_left":
        return Judgment("left", int(rng.integers(1, 4)), seconds)
    if profile.behaviour == "random":
        side = ("left", "right")[int(rng.integers(0, 2))]
        return Judgment(side, int(rng.integers(1, 4)), seconds)
    if rng.random() < profile.left_bias:
        return Judgment("left", 1, seconds * 0.5)
    if rng.random() < profile.lapse:  # a moment of inattention: a coin flip
        return Judgment(("left", "right")[int(rng.integers(0, 2))], 1, seconds * 0.7)
    gap = (u_left - u_right) / scale
    if floor is not None and u_left <= floor and u_right <= floor and rng.random() < profile.both_bad_prob:
        return Judgment("both_bad", None, seconds)
    if abs(gap) < profile.tie_margin and rng.random() < profile.tie_prob:
        return Judgment("tie", None, seconds)
    z = gap / profile.temperature
    p_left = 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
    side = "left" if rng.random() < p_left else "right"
    # Strength follows how obvious the difference is, blurred by the annotator's own noise.
    perceived = abs(z + rng.normal(0.0, 0.5))
    strength = 1 if perceived < 1.0 else 2 if perceived < 2.5 else 3
    return Judgment(side, strength, seconds)


def canonical_choice(judgment: Judgment, left_is_a: bool) -> str:
    """The judgment in the pair's canonical terms: 'A', 'B', 'tie' or 'both_bad'."""
    if judgment.side in ("tie", "both_bad"):
        return judgment.side
    picked_left = judgment.side == "left"
    return "A" if picked_left == left_is_a else "B"


# -- calibration -----------------------------------------------------------------------------------


def synthetic_utility_pairs(n: int, *, seed: int = 0) -> np.ndarray:
    """``[n, 2]`` true utilities of two lists for the same context (the calibration distribution).

    Each context has its own level; the two lists differ by a normal amount, so that most pairs have a
    visible but not obvious difference, a few are near-ties and a few are easy. The gap's standard
    deviation is 1, i.e. the utility scale is 1.
    """
    rng = np.random.default_rng(seed)
    level = rng.normal(0.0, 1.0, (n, 1))
    return level + rng.normal(0.0, math.sqrt(0.5), (n, 2))


def utility_scale(gaps: Iterable[float]) -> float:
    """The spread of utility gaps among the pairs to label (their standard deviation; 1.0 if none vary)."""
    values = np.asarray(list(gaps), dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return 1.0
    spread = float(np.sqrt(np.mean(values**2)))
    return spread if spread > 1e-12 else 1.0


def simulate_labels(
    crowd: Sequence[AnnotatorProfile],
    utilities: np.ndarray,
    *,
    labels_per_pair: int = 3,
    seed: int = 0,
    floor: float | None = None,
    scale: float | None = None,
) -> list[dict[str, Any]]:
    """Labels of pairs with true utilities ``[n, 2]`` without a store (benchmarks, calibration).

    For each pair, ``labels_per_pair`` distinct annotators drawn uniformly from the crowd answer it,
    each seeing the sides in a random order. Returns one dict per label: ``pair`` (row index),
    ``annotator``, ``choice`` (canonical A / B / tie / both_bad), ``strength``, ``left_is_a``,
    ``seconds``. The service path (:func:`run_simulation`) makes the same answers through the queue.
    """
    if labels_per_pair < 1 or labels_per_pair > len(crowd):
        raise ValueError(f"labels_per_pair must be between 1 and the crowd size ({len(crowd)}).")
    utilities = np.asarray(utilities, dtype=float)
    scale = scale if scale is not None else utility_scale(utilities[:, 0] - utilities[:, 1])
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    for row, (u_a, u_b) in enumerate(utilities):
        for j in rng.choice(len(crowd), size=labels_per_pair, replace=False):
            left_is_a = bool(rng.random() < 0.5)
            u_left, u_right = (u_a, u_b) if left_is_a else (u_b, u_a)
            answer = judge(crowd[j], u_left, u_right, rng, scale=scale, floor=floor)
            out.append({"pair": row, "annotator": crowd[j].name, "choice": canonical_choice(answer, left_is_a),
                        "strength": answer.strength, "left_is_a": left_is_a, "seconds": answer.seconds})
    return out


def raw_agreement(
    crowd: Sequence[AnnotatorProfile],
    utilities: np.ndarray,
    *,
    labels_per_pair: int = 3,
    seed: int = 0,
    floor: float | None = None,
    scale: float | None = None,
) -> float:
    """Raw pairwise inter-annotator agreement of a crowd on pairs with true utilities ``[n, 2]``.

    Labels come from :func:`simulate_labels`; agreement is the share of annotator pairs (over all
    pairs) whose canonical answers (A / B / tie / both bad) are identical. This is the figure that
    InstructGPT reports (72.6 ± 1.5%). ``scale`` defaults to the spread of these pairs' gaps; pass the
    task's own when ``utilities`` are a subset of its pairs (e.g. only those that truly differ).
    """
    if labels_per_pair < 2:
        raise ValueError("Agreement needs at least two labels per pair.")
    labels = simulate_labels(crowd, utilities, labels_per_pair=labels_per_pair, seed=seed, floor=floor, scale=scale)
    by_pair: dict[int, list[str]] = {}
    for label in labels:
        by_pair.setdefault(label["pair"], []).append(label["choice"])
    agree = total = 0
    for answers in by_pair.values():
        for x in range(len(answers)):
            for y in range(x + 1, len(answers)):
                total += 1
                agree += answers[x] == answers[y]
    return agree / total if total else float("nan")


def accuracy_against_truth(
    crowd: Sequence[AnnotatorProfile], utilities: np.ndarray, *, seed: int = 0, scale: float | None = None
) -> float:
    """Share of single labels that pick the truly better list (pairs with equal utilities skipped).

    ``scale`` defaults to the spread of all the given pairs' gaps, equal ones included.
    """
    utilities = np.asarray(utilities, dtype=float)
    scale = scale if scale is not None else utility_scale(utilities[:, 0] - utilities[:, 1])
    rng = np.random.default_rng(seed)
    right = total = 0
    for u_a, u_b in utilities:
        if u_a == u_b:
            continue
        profile = crowd[int(rng.integers(0, len(crowd)))]
        left_is_a = bool(rng.random() < 0.5)
        u_left, u_right = (u_a, u_b) if left_is_a else (u_b, u_a)
        choice = canonical_choice(judge(profile, u_left, u_right, rng, scale=scale), left_is_a)
        total += 1
        right += choice == ("A" if u_a > u_b else "B")
    return right / total if total else float("nan")


# -- ground truth ----------------------------------------------------------------------------------


def purchase_utility(
    purchased: Iterable[str],
    items: Sequence[str],
    *,
    category_of: Mapping[str, str | None] | None = None,
    categories_bought: Iterable[str] = (),
    category_credit: float = 0.0,
) -> float:
    """DCG of a list against what the shopper bought later: Σ gain/log2(rank + 1).

    gain = 1 for an item bought later; with ``category_credit`` > 0, an item that was not bought but
    whose category the shopper bought later earns that much instead (a softer ground truth that still
    only uses later purchases). Each item counts once; 0.0 (nothing relevant) is the floor.
    """
    bought = set(purchased)
    cats = set(categories_bought) if category_credit else set()
    seen: set[str] = set()
    total = 0.0
    for rank, item in enumerate(items, start=1):
        if item not in seen:
            if item in bought:
                total += 1.0 / math.log2(rank + 1)
            elif cats and category_of is not None and category_of.get(item) in cats:
                total += category_credit / math.log2(rank + 1)
        seen.add(item)
    return total


@dataclass
class PurchaseUtility:
    """``utility_fn`` for real data: DCG against the shopper's purchases at or after the context's as_of.

    ``future`` maps context id to the set of items bought after its cut (build it with :meth:`from_store`,
    which uses :func:`rlhf.evaluation.future_purchases_from_store`). ``category_credit`` (default 0, pure
    hits) gives partial credit to items of a category the shopper bought later; ``category_of`` is then
    needed. Nothing before the cut is used: this is ground truth, never a model input.
    """

    future: dict[str, set[str]]
    floor: float | None = 0.0
    category_of: dict[str, str | None] | None = None
    category_credit: float = 0.0

    def __post_init__(self) -> None:
        self._future_cats: dict[str, set[str]] = {}
        if self.category_credit and self.category_of is not None:
            for cid, items in self.future.items():
                self._future_cats[cid] = {c for c in (self.category_of.get(i) for i in items) if c}

    def __call__(self, context: Any, items: Sequence[str]) -> float:
        return purchase_utility(
            self.future.get(context.context_id, set()), items, category_of=self.category_of,
            categories_bought=self._future_cats.get(context.context_id, ()), category_credit=self.category_credit,
        )

    @classmethod
    def from_store(
        cls, store: Any, contexts: Sequence[Any], *, events: Sequence[str] | None = None, category_credit: float = 0.0
    ) -> PurchaseUtility:
        from rlhf.evaluation import future_purchases_from_store

        category_of = None
        if category_credit:
            from storage import evaluation_queries as q

            with store.transaction() as con:
                frame = q.item_categories(con)
            category_of = {i: (c if isinstance(c, str) and c else None)
                           for i, c in zip(frame["item_id"], frame["category"])}
        return cls(future_purchases_from_store(store, contexts, events=events), category_of=category_of,
                   category_credit=category_credit)


# -- labelling through the service -----------------------------------------------------------------


@dataclass
class SimulationReport:
    """What a simulation run did, for the CLI and benchmarks."""

    labels: int = 0
    skipped: int = 0
    by_annotator: dict[str, int] = field(default_factory=dict)
    choices: dict[str, int] = field(default_factory=dict)
    seconds_simulated: float = 0.0
    wall_s: float = 0.0
    service_ms: list[float] = field(default_factory=list)
    stopped: str = ""
    #: Labels on pairs whose two lists are worth the same in truth (the utilities the crowd judged, reasons
    #: included when it reads them): whatever the crowd says there is noise.
    truth_ties: int = 0
    #: A / B answers on pairs whose lists differ in truth, and how many of them picked the better list.
    decided: int = 0
    decided_right: int = 0

    def summary(self) -> dict[str, Any]:
        ms = np.asarray(self.service_ms) if self.service_ms else np.asarray([np.nan])
        return {
            "labels": self.labels,
            "annotators": len(self.by_annotator),
            "choices": dict(self.choices),
            "truth_ties_share": round(self.truth_ties / self.labels, 3) if self.labels else None,
            "right_where_lists_differ": round(self.decided_right / self.decided, 3) if self.decided else None,
            "simulated_hours": round(self.seconds_simulated / 3600.0, 2),
            "wall_s": round(self.wall_s, 2),
            "service_p50_ms": round(float(np.nanpercentile(ms, 50)), 2),
            "service_p95_ms": round(float(np.nanpercentile(ms, 95)), 2),
            "stopped": self.stopped,
        }


_BADGE_FLAGS = {"unknown item": "not_in_catalogue", "duplicate": "duplicate", "not a candidate": "irrelevant",
                "no reason": "bad_reason", "copied example reason": "bad_reason"}


def ensure_accounts(store: Any, crowd: Sequence[AnnotatorProfile]) -> list[str]:
    """Create a simulated annotator account (``kind='simulated'``) for each profile that has none.

    Accounts go through :func:`rlhf.auth.create_user` like real ones, with a random password nobody
    knows. A *human* account with the same name is an error: a simulation never labels as a person.
    """
    import secrets

    from rlhf.auth import create_user
    from rlhf.errors import RecFeedbackError
    from storage import users as users_repo

    with store.transaction() as con:
        existing = {a.annotator_id: a for a in users_repo.list_annotators(con)}
    names = []
    for profile in crowd:
        found = existing.get(profile.name)
        if found is not None and found.kind != "simulated":
            raise RecFeedbackError(f"{profile.name!r} is a {found.kind} account; simulated annotators need their own.")
        if found is None:
            create_user(store, profile.name, secrets.token_urlsafe(18), "annotator",
                        display_name=f"Simulated {profile.behaviour} annotator", kind="simulated")
        names.append(profile.name)
    return names


def queue_utility_scale(store: Any, utility_fn: UtilityFn) -> float:
    """The utility scale of the open pairs in the queue (spread of their utility gaps)."""
    from storage import contexts as contexts_repo
    from storage import generations as gen_repo

    with store.transaction() as con:
        pairs = [p for p in gen_repo.list_pairs(con, status="open", source=None) if p.gen_a and p.gen_b]
        gens = gen_repo.get_generations(con, sorted({g for p in pairs for g in (p.gen_a, p.gen_b)}))
        ctx_ids = sorted({p.context_id or gens[p.gen_a].context_id for p in pairs if p.gen_a in gens})
        ctxs = contexts_repo.get_contexts(con, ctx_ids)
    gaps = []
    for p in pairs:
        if p.gen_a not in gens or p.gen_b not in gens:
            continue
        context = ctxs.get(p.context_id or gens[p.gen_a].context_id)
        if context is None:
            continue
        gaps.append(utility_fn(context, [i.item_id for i in gens[p.gen_a].items])
                    - utility_fn(context, [i.item_id for i in gens[p.gen_b].items]))
    return utility_scale(gaps)


def run_simulation(
    store: Any,
    crowd: Sequence[AnnotatorProfile],
    utility_fn: UtilityFn,
    n_labels: int,
    *,
    settings: Any = None,
    seed: int = 0,
    scale: float | None = None,
    floor: float | None = None,
    reason_penalty: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimulationReport:
    """Label up to ``n_labels`` pairs with the crowd, through :mod:`rlhf.annotation` like the browser.

    Each step picks an annotator uniformly (so each contributes a similar share, as the calibration
    assumes; their simulated speed shows up as time on task, not as volume), asks
    :func:`rlhf.annotation.next_task` for their task, looks up the two lists' true utilities, answers
    with :func:`judge`, flags items that carry problem badges (careful annotators only) and submits with
    :func:`rlhf.annotation.submit_label`, recording the simulated seconds as time on task. It stops when
    ``n_labels`` labels are stored or no annotator has work left. Accounts must exist
    (:func:`ensure_accounts`). ``scale`` defaults to the spread of utility gaps over the open pairs;
    ``floor`` defaults to the utility's own ``floor`` attribute (None when it has none).
    ``reason_penalty`` (default ``settings.simulation.reason_penalty``): careful annotators read the reasons,
    take that many scale units off a list whose reasons are all off-topic (pro rata for fewer) and flag
    most off-topic reasons as ``bad_reason``.
    One ``seed`` repeats a simulation on an identical store: it draws the annotators and their answers,
    and the queue's own draws (gold pairs, re-shows, which list is on the left) unless ``settings.queue.seed``
    fixes those already.
    """
    from rlhf import annotation
    from rlhf.settings import get_settings, with_values
    from storage import contexts as contexts_repo
    from storage import generations as gen_repo
    from storage.errors import ConflictError

    settings = settings or get_settings()
    if settings.queue.seed is None:  # the queue's draws (gold, re-show, left side) follow the run's seed too
        settings = with_values(settings, "queue", seed=seed)
    if n_labels < 0:
        raise ValueError("n_labels must not be negative.")
    if not crowd:
        raise ValueError("The crowd is empty.")
    scale = scale if scale is not None else queue_utility_scale(store, utility_fn)
    floor = floor if floor is not None else getattr(utility_fn, "floor", None)
    reason_penalty = settings.simulation.reason_penalty if reason_penalty is None else reason_penalty
    if reason_penalty < 0 or not math.isfinite(reason_penalty):
        raise ValueError(f"The reason penalty must be a non-negative number, not {reason_penalty}.")
    rng = np.random.default_rng(seed)
    report = SimulationReport()
    contexts: dict[str, Any] = {}
    active = list(range(len(crowd)))
    started = time.perf_counter()
    while report.labels < n_labels and active:
        who = active[int(rng.integers(0, len(active)))]
        profile = crowd[who]
        t0 = time.perf_counter()
        task = annotation.next_task(store, profile.name, settings=settings)
        report.service_ms.append((time.perf_counter() - t0) * 1000.0)
        if task is None:
            active.remove(who)
            continue
        if task.pair_id not in contexts:
            with store.transaction() as con:
                pair = gen_repo.get_pair(con, task.pair_id)
                context_id = pair.context_id or gen_repo.get_generation(con, pair.gen_a).context_id
                contexts[task.pair_id] = contexts_repo.get_context(con, context_id)
        context = contexts[task.pair_id]
        u_left = float(utility_fn(context, [i.item_id for i in task.left.items]))
        u_right = float(utility_fn(context, [i.item_id for i in task.right.items]))
        off_topic: dict[str, set[str]] = {}
        if reason_penalty and profile.behaviour == "bt":
            off_topic = _off_topic_items(task)
            u_left -= reason_penalty * scale * len(off_topic["left"]) / max(1, len(task.left.items))
            u_right -= reason_penalty * scale * len(off_topic["right"]) / max(1, len(task.right.items))
        answer = judge(profile, u_left, u_right, rng, scale=scale, floor=floor)
        flags = _flags(profile, task, rng, off_topic)
        t0 = time.perf_counter()
        try:
            label = annotation.submit_label(
                store, profile.name, task.assignment_id, answer.side,
                strength=answer.strength if answer.side in ("left", "right") else None,
                item_flags=flags or None, time_ms=int(answer.seconds * 1000), settings=settings,
                source=SIMULATED_SOURCE,
            )
        except ConflictError:
            log.info("simulated label by %s lost its pair (lease taken over)", profile.name)
            report.skipped += 1
            continue
        report.service_ms.append((time.perf_counter() - t0) * 1000.0)
        report.labels += 1
        report.by_annotator[profile.name] = report.by_annotator.get(profile.name, 0) + 1
        report.choices[label.choice] = report.choices.get(label.choice, 0) + 1
        report.seconds_simulated += answer.seconds
        if u_left == u_right:
            report.truth_ties += 1
        elif answer.side in ("left", "right"):
            report.decided += 1
            report.decided_right += (answer.side == "left") == (u_left > u_right)
        if progress is not None:
            progress(1)
    report.wall_s = time.perf_counter() - started
    report.stopped = "done" if report.labels >= n_labels else "queue empty"
    return report


def _off_topic_items(task: Any) -> dict[str, set[str]]:
    """Per side, the items whose reason is about neither the item nor the shopper's earlier purchases, or
    only copies a candidate's line from the prompt (:func:`rlhf.reasons.line_verdicts`)."""
    from rlhf.reasons import grounded_lines

    history = [h.title for h in task.history]
    candidates = [c.title for c in task.candidates]
    out = {}
    for side, shown in (("left", task.left), ("right", task.right)):
        flags = grounded_lines([(i.reason, i.title, i.category) for i in shown.items], history, candidates)
        out[side] = {i.item_id for i, ok in zip(shown.items, flags) if not ok}
    return out


def _flags(
    profile: AnnotatorProfile, task: Any, rng: np.random.Generator, off_topic: Mapping[str, set[str]] | None = None
) -> dict[str, dict[str, list[str]]]:
    """Careful annotators flag most items whose problem badge they can see, and (when they read reasons)
    most off-topic reasons as ``bad_reason``; spammers never flag."""
    if profile.behaviour != "bt":
        return {}
    off_topic = off_topic or {}
    out: dict[str, dict[str, list[str]]] = {}
    for side, shown in (("left", task.left), ("right", task.right)):
        for item in shown.items:
            flags = {_BADGE_FLAGS[b] for b in item.badges if b in _BADGE_FLAGS}
            if item.item_id in off_topic.get(side, ()):
                flags.add("bad_reason")
            flags = sorted(flags)
            if flags and rng.random() < 0.7:
                out.setdefault(side, {})[item.item_id] = flags
    return out


def default_utility(
    store: Any, *, events: Sequence[str] | None = None, category_credit: float = 0.0
) -> UtilityFn:
    """The ground truth the store offers: the demo shop's hidden preferences when shoppers have them
    (and :mod:`rlhf.demo` is installed), otherwise purchases after each context's cut."""
    from storage import catalog as catalog_repo
    from storage import contexts as contexts_repo

    with store.transaction() as con:
        shoppers = catalog_repo.all_shoppers(con)
        contexts = contexts_repo.list_contexts(con)
    prefs = {s.shopper_id: s.hidden_preferences for s in shoppers if s.hidden_preferences}
    if prefs:
        demo = demo_utility(store)
        if demo is not None:
            return demo
    return PurchaseUtility.from_store(store, contexts, events=events, category_credit=category_credit)


def demo_utility(store: Any) -> UtilityFn | None:
    """``utility_fn`` from the demo shop's hidden preferences (:func:`rlhf.demo.utility_fn_for_store`)."""
    try:
        from rlhf import demo
    except ImportError:
        return None
    factory = getattr(demo, "utility_fn_for_store", None)
    return None if factory is None else factory(store)


UTILITIES: tuple[str, ...] = ("auto", "purchases")


def label_queue(
    store: Any,
    settings: Any,
    n_labels: int,
    *,
    annotators: int | None = None,
    crowd: str | None = None,
    seed: int | None = None,
    utility: str = "auto",
    reason_penalty: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Let a simulated crowd label up to ``n_labels`` pairs of the queue: ``recfeedback simulate`` and the
    Training page's demo button, one way. Unset choices come from ``settings.simulation``; ``utility`` is
    ``auto`` (the demo shop's hidden preferences if any, else later purchases) or ``purchases``.

    Returns :meth:`SimulationReport.summary` with the crowd's kind and its raw pairwise agreement on
    synthetic pairs (the calibration check). Raises RecFeedbackError for an unknown crowd or utility.
    """
    from rlhf.errors import RecFeedbackError
    from storage import contexts as contexts_repo

    s = settings.simulation
    n = annotators if annotators is not None else s.annotators
    kind = crowd or s.crowd
    seed = s.seed if seed is None else seed
    if kind not in CROWD_KINDS:
        raise RecFeedbackError(f"Unknown crowd {kind!r}; choose one of {', '.join(CROWD_KINDS)}.")
    if utility not in UTILITIES:
        raise RecFeedbackError(f"Unknown utility {utility!r}; choose {' or '.join(UTILITIES)}.")
    if n < 1 or n_labels < 0:
        raise RecFeedbackError("Use at least one annotator and a non-negative number of labels.")
    events = settings.rounds.eval_events or None
    if utility == "purchases":
        with store.transaction() as con:
            contexts = contexts_repo.list_contexts(con)
        utility_fn = PurchaseUtility.from_store(store, contexts, events=events, category_credit=s.category_credit)
    else:
        utility_fn = default_utility(store, events=events, category_credit=s.category_credit)
    profiles = make_crowd(n, kind, seed=seed, target_agreement=s.target_agreement if kind == "default" else None)
    ensure_accounts(store, profiles)
    report = run_simulation(store, profiles, utility_fn, n_labels, settings=settings, seed=seed,
                            reason_penalty=reason_penalty, progress=progress)
    summary = report.summary()
    summary["crowd"] = kind
    summary["crowd_agreement_synthetic"] = round(
        raw_agreement(profiles, synthetic_utility_pairs(1500, seed=seed + 1), seed=seed,
                      labels_per_pair=min(3, n)), 3) if n >= 2 else None
    return summary


def observed_agreement(labels: Iterable[Any]) -> float:
    """Raw pairwise agreement among stored labels (``pair_id``, ``choice``), re-shows excluded."""
    by_pair: dict[str, list[str]] = {}
    for label in labels:
        if getattr(label, "is_reshow", False):
            continue
        by_pair.setdefault(label.pair_id, []).append(label.choice)
    agree = total = 0
    for choices in by_pair.values():
        for x in range(len(choices)):
            for y in range(x + 1, len(choices)):
                total += 1
                agree += choices[x] == choices[y]
    return agree / total if total else float("nan")
