"""What several of the loop benchmark's sections use: the UCI store they build, an earlier run's store,
generic reasons for lists without a policy, a seeded crowd, a percentile, whether two lists truly differ."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rlhf.settings import load_settings
from storage import Store


def pct(values, q) -> float:
    """The q-th percentile of ``values``, NaN for none (latency tables)."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def differs(u_a, u_b):
    """Whether two lists' true utilities differ (elementwise for arrays): only then can a label (or a reward
    model) be right or wrong."""
    return np.abs(np.asarray(u_a) - np.asarray(u_b)) > 1e-9


def list_text(items, titles: dict[str, str], cats: dict[str, str]) -> str:
    """A templated list of ``items`` for reward models that read plain text (no policy in the loop)."""
    return "\n".join(f"{k + 1}. {titles[i]} - a good match in {cats.get(i) or 'the shop'}" for k, i in enumerate(items))


#: Generic reasons for lists written in the policy's format without a policy (the probe's pools).
PROBE_REASONS = ("Matches what they bought before.", "A popular choice in this category.",
                 "Good value for the price.", "Complements their earlier purchases.", "A useful addition for their home.")


def uci_store(args, work: Path, retrieval: dict | None = None, **overrides):
    """A store under ``work`` with UCI imported and contexts built at ``--cut`` as the loop builds them
    (``--candidates``, ``--history-cap``, ``--max-contexts``, 30% of shoppers held out; ``retrieval``:
    other ``contexts`` settings, default the product's; ``overrides``: other settings sections):
    (store, settings)."""
    from rlhf.contexts import build_contexts
    from rlhf.importing import import_online_retail

    contexts = {"n_candidates": args.candidates, "history_cap": args.history_cap, "heldout_fraction": 0.3}
    contexts.update(retrieval or {})
    settings = load_settings(store={"data_dir": work / "data"}, contexts=contexts,
                             generation={"list_length": args.list_length}, **overrides)
    store = Store.from_settings(settings)
    import_online_retail(store, Path(args.uci_dir), settings=settings)
    build_contexts(store, settings=settings, as_of=args.cut, limit=args.max_contexts)
    return store, settings


def earlier_run(workdir: str):
    """An earlier ``--section uci`` run's store, its last done round's settings (pointed at that store) and
    its done rounds, oldest first."""
    from storage import rounds as rounds_repo

    data = Path(workdir) / "data"
    store = Store(data / "recfeedback.duckdb")
    with store.transaction() as con:
        done = [r for r in rounds_repo.list_rounds(con) if r.status == "done"]
    config = dict(done[-1].config or {})
    config["store"] = {**config.get("store", {}), "data_dir": str(data)}
    return store, load_settings(**config), done


class SeededCrowd:
    """A simulated crowd whose k-th label of a run is drawn from ``seed + k`` alone.

    While a round runs, the crowd labels in between polls of the round's process, so how its labels are
    split into calls depends on timing. Seeding each label by its index (and fixing the utility scale
    once, from the first queue) keeps the answers the same however they are split: one seed repeats a run.
    That holds while the queue a round starts from is labelled out before the round adds its pairs (any
    run whose ``--labels-per-round`` covers the queue, or whose rounds outlast its labelling); otherwise
    when the new pairs overtake the old ones depends on timing again.
    """

    def __init__(self, store, settings, crowd, utility, seed: int) -> None:
        from rlhf import simulate as sim

        self.store, self.settings, self.crowd, self.utility, self.seed = store, settings, crowd, utility, seed
        self.scale = sim.queue_utility_scale(store, utility)
        self.given = 0

    def label(self, n: int) -> tuple[int, list[float]]:
        """Up to ``n`` labels, fewer when the queue runs dry: (labels given, service latencies in ms)."""
        from rlhf import simulate as sim

        labels, service_ms = 0, []
        while labels < n:
            rep = sim.run_simulation(self.store, self.crowd, self.utility, 1, settings=self.settings,
                                     seed=self.seed + self.given, scale=self.scale)
            service_ms += rep.service_ms
            if rep.labels == 0:
                break
            labels += 1
            self.given += 1
        return labels, service_ms
