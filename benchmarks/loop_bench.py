"""The loop's measures (issue 7): label efficiency, the loop on real UCI data, stage wall times, and the
annotator-facing latency while a round runs in another process. Prints figures; asserts nothing.

Sections (each can be skipped; every size is a flag):

1. ``--section efficiency`` — labels needed to reach a reward-model held-out accuracy with ACTIVE
   selection (rlhf.active, the round's mix) vs RANDOM pairs. Demo shop (hidden preferences = truth),
   pool of candidate lists per training context, a simulated default crowd (~0.75 agreement) answers
   with :func:`rlhf.simulate.judge`; the reward model (TRL RewardTrainer + LoRA, ``--rm-backbone``) is
   retrained from scratch after each batch and scored on held-out-context pairs whose label is the TRUE
   utility order. Lists are sampled from each context's candidates with templated reasons (not LLM
   samples) so that the pool is large and the CPU budget goes into the reward model. ``--arm`` adds
   selection variants on the same pool, crowd and test pairs (``ensemble`` with another mix, or
   ``laplace`` / ``sandwich`` / ``epig`` / ``pepig``: that quota from the probe's own posterior,
   posterior_selection.py);
   every arm is compared with random and with active, paired by repeat.
2a. ``--section ceiling`` — NDCG@N on UCI of lists that need no model (the first candidates as shown,
   random candidates, the best candidates by later purchases) next to the baselines, for each candidate
   retrieval (``--retrievals``: co-purchase similarity and candidate order): what a policy that
   chooses among the candidates can reach. With ``--zero-shot``, the real policy's lists in each
   retrieval and where its picks sit among the candidates.
2b. ``--section rm-inputs`` — what the small-data reward model (the probe's head) learns from crowd labels
   on random candidate lists, for each input it can read, with and without the match features
   (``--rm-data uci``: truth = later purchases; ``demo``: the demo shop's hidden preferences), by
   training labels. ``--rm-pool differ`` asks only pairs whose lists truly differ (an oracle: how much the
   labels on no-difference pairs cost). ``--section rm-inputs-mean --combine A.json,B.json,...`` averages seeds' runs.
1v. ``--section versus --combine BASE.json,NEW.json`` — two efficiency runs of the same command and seeds
   under two settings (e.g. the reward model's features), paired repeat by repeat against BASE's random.
2. ``--section uci`` — the real loop on UCI Online Retail: import (rlhf.importing), contexts at a time
   cut (rlhf.contexts), zero-shot lists and a first queue (rlhf.pairs.bootstrap_queue), simulated
   annotators whose ground truth is the shopper's LATER purchases (``PurchaseUtility``,
   ``--category-credit``), then ``--rounds`` training rounds, each run as a BACKGROUND PROCESS
   (rlhf.rounds.launch_round) while the crowd keeps labelling through rlhf.annotation: that gives the
   annotator latency during a round (vs before any round), and each round's stage wall times and its
   evaluation (NDCG@N, HR@N, validity, diversity; popularity and co-purchase baselines; zero-shot).
2o. ``--section uci-more --from-workdir DIR`` — an earlier ``uci`` run's last round and zero-shot policy on
   more held-out shoppers (``--more-shoppers``, those with purchases after the cut), same cut and the
   round's recorded settings: the paired NDCG difference on the new shoppers alone, and pooled.
2p. ``--section reasons --from-workdir DIR`` — the share of reasons about the item or the shopper's history
   (rlhf.reasons) for an earlier run's round policies and zero-shot policy, paired against the last round.
2q. ``--section reasons-rm --from-workdir DIR`` — whether the probe learns the reasons from a crowd that judges
   them (``--reason-penalties``), on that run's real policy lists: held-out accuracy by purchases and by reasons.

Full run (GPU recommended): see benchmarks/results/loop.md for the exact command.

This file is the command line; each section's code is a module of ``benchmarks/loop_sections/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from loop_sections.efficiency import efficiency, summarise_efficiency, versus_runs
from loop_sections.reasons import reasons_rm_section, reasons_section
from loop_sections.uci_data import reward_inputs_section, summarise_rm_inputs, uci_ceiling
from loop_sections.uci_rounds import uci, uci_more_shoppers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", choices=["all", "efficiency", "ceiling", "rm-inputs", "uci", "uci-more", "reasons",
                                        "reasons-rm", "combine", "versus", "rm-inputs-mean"], default="all")
    p.add_argument("--retrievals", default="user:interleaved,item:interleaved,item:relevance",
                   help="ceiling: contexts.copurchase_similarity:contexts.candidate_order pairs to compare")
    p.add_argument("--zero-shot", action="store_true",
                   help="ceiling: the real policy also writes one list per held-out shopper in each order")
    p.add_argument("--combine", default="", help="--section combine: comma list of efficiency --json-out files to "
                   "pool; --section versus: BASE,NEW, two runs of the same command and seeds under two settings; "
                   "--section rm-inputs-mean: rm-inputs --json-out files (one per seed) to average")
    p.add_argument("--tags", default="base,new", help="--section versus: names of the BASE and NEW runs' arms")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list-length", type=int, default=5)
    p.add_argument("--rm-method", choices=["auto", "lora", "probe"], default="auto",
                   help="uci: reward_model.method of the rounds (runs before 2026-12-01 were LoRA: use lora)")
    p.add_argument("--rm-backbone", default="minilm")
    p.add_argument("--rm-epochs", type=float, default=2.0)
    p.add_argument("--rm-lr", type=float, default=5e-4)
    p.add_argument("--rm-max-length", type=int, default=256)
    p.add_argument("--json-out", default=None)
    p.add_argument("--repeats", type=int, default=1, help="label efficiency, reasons-rm: repeat with seeds seed..seed+R-1")
    p.add_argument("--le-data", choices=["demo", "uci"], default="demo",
                   help="label efficiency: the demo shop (its hidden tastes as truth) or the loop's UCI contexts "
                   "(later purchases as truth, --cut, --max-contexts, --candidates, --history-cap, --category-credit)")
    g = p.add_argument_group("label efficiency")
    g.add_argument("--le-rm", choices=["features", "probe", "trl"], default="features",
                   help="features: Bradley-Terry logistic model on observable list features (fast, CPU); "
                        "probe: the product's small-data reward model (rlhf.reward.probe) on lists in the policy's "
                        "answer format, the pool embedded once (fast, CPU); "
                        "trl: the product's TRL RewardTrainer + LoRA on --rm-backbone (slow on CPU)")
    g.add_argument("--warmup-labels", type=int, default=0,
                   help="active: random instead of uncertainty/disagreement below this many labels "
                        "(a variant tried, not in the product)")
    g.add_argument("--arm", action="append", default=[],
                   help="an extra selection arm besides random and active, NAME=ensemble|laplace|sandwich|epig|pepig[:share=value,...], "
                        "e.g. info=laplace:uncertainty=0,disagreement=0.7 (repeatable; all but ensemble need --le-rm probe; "
                        "epig / pepig: expected predictive information gain on random pool pairs, top-k / drawn)")
    g.add_argument("--le-ensemble", type=int, default=3, help="reward models in the active ensemble (bootstrap)")
    g.add_argument("--le-items", type=int, default=240)
    g.add_argument("--le-shoppers", type=int, default=160)
    g.add_argument("--le-crowd", default="default")
    g.add_argument("--crowd-size", type=int, default=20)
    g.add_argument("--lists-per-context", type=int, default=4)
    g.add_argument("--seed-pairs", type=int, default=40)
    g.add_argument("--batch", type=int, default=40)
    g.add_argument("--steps", type=int, default=5)
    g.add_argument("--test-pairs", type=int, default=300)
    g.add_argument("--target", type=float, default=0.70)
    g.add_argument("--shares", default=None,
                   help="active mix, e.g. uncertainty=0.5,disagreement=0.2,coverage=0.15,random=0.15 "
                        "(default: settings.rounds)")
    u = p.add_argument_group("UCI loop")
    u.add_argument("--uci-dir", default=str(ROOT.parent / "shared" / "data" / "uci_online_retail"))
    u.add_argument("--workdir", default=None)
    u.add_argument("--cut", default="2011-09-01")
    u.add_argument("--max-contexts", type=int, default=400)
    u.add_argument("--candidates", type=int, default=20)
    u.add_argument("--history-cap", type=int, default=10)
    u.add_argument("--policy", default=None, help="model spec (default: settings.model.policy)")
    u.add_argument("--tiny-policy", action="store_true",
                   help="use a tiny random-init policy (CPU smoke run of the machinery; NDCG is meaningless)")
    u.add_argument("--max-new-tokens", type=int, default=160)
    u.add_argument("--ppo-steps", type=int, default=50)
    u.add_argument("--ppo-batch", type=int, default=16)
    u.add_argument("--pool-contexts", type=int, default=100)
    u.add_argument("--eval-contexts", type=int, default=200)
    u.add_argument("--new-pairs", type=int, default=200)
    u.add_argument("--initial-pairs", type=int, default=100)
    u.add_argument("--labels-per-round", type=int, default=300)
    u.add_argument("--overlap", type=int, default=3)
    u.add_argument("--ensemble", type=int, default=3)
    u.add_argument("--rounds", type=int, default=3)
    u.add_argument("--category-credit", type=float, default=0.2)
    u.add_argument("--from-workdir", default=None, help="uci-more, reasons: an earlier --section uci run's --workdir")
    u.add_argument("--more-shoppers", type=int, default=150,
                   help="uci-more: new held-out shoppers (with purchases after the cut) to sample lists for")
    u.add_argument("--rm-data", choices=["uci", "demo"], default="uci", help="rm-inputs: which data and truth")
    u.add_argument("--rm-pool", choices=["all", "differ"], default="all",
                   help="rm-inputs: ask any pool pair, or (an oracle) only pairs whose lists truly differ")
    u.add_argument("--rm-sizes", default="100,300,1000,3000",
                   help="rm-inputs, reasons-rm: training pairs asked at which the reward models are scored")
    u.add_argument("--rm-trl-sizes", default="",
                   help="rm-inputs: pairs asked at which the product's TRL + LoRA reward model (on --rm-backbone, "
                        "--rm-epochs, --rm-lr, --rm-max-length, as the full run's rounds) is also trained end to end "
                        "and scored, e.g. 1000,3000 (slow on CPU)")
    u.add_argument("--reason-penalties", default="0,0.5,1,2",
                   help="reasons-rm: utility-scale units the crowd takes off a list whose every reason is off-topic")
    u.add_argument("--rm-heldout", type=float, default=0.3, help="reasons-rm: share of shoppers held out")
    u.add_argument("--reason-penalty", type=float, default=0.0,
                   help="uci: the crowd also judges reasons (simulation.reason_penalty; 0 = items only, the issue's crowd)")
    u.add_argument("--structure-weight", type=float, default=None,
                   help="uci: PPO's structural terms' weight (ppo.structure_weight; default the product's)")
    u.add_argument("--ppo-copies", action="store_true",
                   help="uci: PPO's own_reasons term marks down copied candidate lines (ppo.own_reasons_count_copies)")
    u.add_argument("--reason-features", action="store_true",
                   help="uci: the rounds' probe reads reason_fit_after_copy (reward_model.probe_reason_features)")
    args = p.parse_args()
    import torch

    print(f"host: {os.cpu_count()} CPUs, torch {torch.__version__}, CUDA {torch.cuda.is_available()}; "
          f"args: {vars(args)}\n", flush=True)
    out = {}
    if args.section in ("all", "efficiency"):
        runs = []
        for r in range(args.repeats):
            runs.append(efficiency(argparse.Namespace(**{**vars(args), "seed": args.seed + r})))
        if args.repeats > 1:
            summarise_efficiency(runs, args.target)
        out["efficiency"] = runs
    if args.section == "combine":  # pool the repeats of earlier efficiency runs (their --json-out files)
        runs = [r for f in args.combine.split(",") if f for r in json.loads(Path(f).read_text())["efficiency"]]
        summarise_efficiency(runs, args.target)
    if args.section == "rm-inputs-mean":  # the mean over seeds of earlier rm-inputs runs (their --json-out files)
        summarise_rm_inputs([json.loads(Path(f).read_text())["rm_inputs"] for f in args.combine.split(",") if f])
    if args.section == "versus":  # two efficiency runs on the same seeds, repeat by repeat
        summarise_efficiency(versus_runs(*args.combine.split(","), tags=args.tags.split(",")), args.target,
                             goal=" (base's random pairs as the reference)")
    if args.section in ("all", "ceiling"):
        out["ceiling"] = uci_ceiling(args)
    if args.section in ("all", "rm-inputs"):
        out["rm_inputs"] = reward_inputs_section(args)
    if args.section in ("all", "uci"):
        out["uci"] = uci(args)
    if args.section == "uci-more":
        out["uci_more"] = uci_more_shoppers(args)
    if args.section == "reasons":
        out["reasons"] = reasons_section(args)
    if args.section == "reasons-rm":
        out["reasons_rm"] = reasons_rm_section(args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
