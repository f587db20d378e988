"""PPO benchmark: our trainer vs the last TRL PPOTrainer (trl 1.12.0, trl.experimental.ppo), side by side.

What it measures (prints figures; asserts nothing):

1. **peer** (default): the same tiny 2-layer Llama, the same word-level vocabulary, the same batch
   (episodes per update), response length, PPO epochs, LoRA adapter, learning rate, KL coefficient and
   reward, trained by (a) ``rlhf.ppo.PPOTrainer`` in this venv and (b) ``trl.experimental.ppo.PPOTrainer``
   in its own venv (``benchmarks/out/peer-venv``, created on first use:
   ``python3 -m venv``; ``pip install torch==2.13.0``; ``pip install trl==1.12.0 transformers==5.23.0
   accelerate==1.15.0 datasets==5.2.0 peft==0.21.2``). Reported: updates/s (one update = sample a batch
   + all PPO epochs; timed from the end of the first update to the end of the last, so start-up is
   excluded), our ÷ theirs, and the mean reward of the last 5 updates for both.
   The reward is programmatic and identical on both sides: the share of the ``response_length``
   response slots filled with a digit token ("0".."9", 10 of the 30 words; a random policy scores
   about 0.2). TRL's trainer takes a reward *model*, so it gets a tiny nn.Module that computes exactly
   this from the token ids at the last response position.
2. ``--gpu``: the default SmolLM2-135M policy, batch 64, 128 new tokens: samples/s, tokens/s,
   s per PPO step and peak GPU memory for our PPO and for TRL GRPO (needs CUDA; says so otherwise).
3. ``--demo-store DIR``: on a store with a trained reward model, reward-model score, validity and (on
   the demo shop) the true hidden-preference utility of the policy's lists on held-out contexts before
   and after ``--demo-steps`` PPO steps, with paired 95% intervals, and the held-out KL.

Usage::

    nice -n 10 .venv/bin/python benchmarks/ppo_bench.py                  # peer comparison (CPU)
    nice -n 10 .venv/bin/python benchmarks/ppo_bench.py --updates 20 --repeats 2
    .venv/bin/python benchmarks/ppo_bench.py --gpu                       # on a CUDA machine
    .venv/bin/python benchmarks/ppo_bench.py --demo-store data --demo-steps 200
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
PEER_VENV = OUT / "peer-venv"
PEER_PACKAGES = ["trl==1.12.0", "transformers==5.23.0", "accelerate==1.15.0", "datasets==5.2.0", "peft==0.21.2"]

WORDS = ["<pad>", "<bos>", "<eos>", "<unk>", *[str(i) for i in range(10)],
         "user", "likes", "item", "next", "buy", "red", "blue", "mug", "lamp", "book", "pick", "one",
         "a", "the", "and", "for"]
TARGET = "0123456789"  # reward: share of response tokens that are one of these digits

# ----------------------------------------------------------------------------- shared setup
SETUP = r'''
import json, sys, time
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

def make_tokenizer(words):
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")

def make_prompts(n, prompt_words):
    import random
    rng = random.Random(0)
    pool = [w for w in WORDS[4:] if w not in TARGET]
    return [" ".join(rng.choice(pool) for _ in range(prompt_words)) for _ in range(n)]
'''


def _setup_namespace() -> dict:
    ns: dict = {"WORDS": WORDS, "TARGET": TARGET}
    exec(SETUP, ns)  # noqa: S102 - our own constant code, shared verbatim with the peer script
    return ns


def build_model(folder: Path, hidden: int, layers: int, seed: int) -> None:
    """Save the tiny policy + tokenizer both trainers start from (identical weights)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    ns = _setup_namespace()
    tok = ns["make_tokenizer"](WORDS)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(WORDS), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=256, tie_word_embeddings=False, initializer_range=0.2,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


# ----------------------------------------------------------------------------- ours
def run_ours(args: argparse.Namespace, model_dir: Path) -> dict:
    import torch
    from transformers import LlamaForCausalLM

    from rlhf.ppo.config import PPOConfig
    from rlhf.ppo.rewards import ComposedReward, RewardTerm
    from rlhf.ppo.trainer import PPOTrainer

    torch.set_num_threads(args.threads)
    ns = _setup_namespace()
    tok = ns["make_tokenizer"](WORDS)
    targets = {WORDS.index(d) for d in TARGET}
    model = LlamaForCausalLM.from_pretrained(model_dir)
    reward = ComposedReward([RewardTerm("digit_share", lambda b: [
        sum(1 for t in ids if t in targets) / args.response_length for ids in b.response_ids])])
    cfg = PPOConfig(steps=args.updates, batch_size=args.episodes, mini_batch_size=args.episodes,
                    ppo_epochs=args.ppo_epochs, learning_rate=args.lr, temperature=args.temperature,
                    max_new_tokens=args.response_length, lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                    init_kl_coef=args.kl_coef, adaptive_kl=False, tensorboard=False, checkpoint_every=0,
                    seed=args.seed, constrained=False, max_grad_norm=0.0,
                    bf16=False)  # the peer runs in fp32 on a CPU (bf16=False there too): like for like
    prompts = ns["make_prompts"](64, args.prompt_words)
    trainer = PPOTrainer(cfg, model, tok, reward, prompts)
    stamps, rewards = [], []
    for _ in range(args.updates):
        m = trainer.step()
        stamps.append(time.perf_counter())
        rewards.append(m["reward/score"])
    return _summary("ours (rlhf.ppo.PPOTrainer)", stamps, rewards)


def _summary(name: str, stamps: list[float], rewards: list[float]) -> dict:
    n = len(stamps)
    ups = (n - 1) / (stamps[-1] - stamps[0]) if n > 1 else float("nan")
    return {"trainer": name, "updates": n, "updates_per_s": ups, "reward_first": rewards[0],
            "reward_last5": sum(rewards[-5:]) / len(rewards[-5:]), "rewards": [round(r, 4) for r in rewards]}


# ----------------------------------------------------------------------------- peer
PEER = SETUP + r'''
WORDS = json.loads(sys.argv[1]); TARGET = sys.argv[2]; args = json.loads(sys.argv[3])
torch.set_num_threads(args["threads"])
from datasets import Dataset
from peft import LoraConfig
from transformers import LlamaForSequenceClassification, TrainerCallback
from trl.experimental.ppo import PPOConfig, PPOTrainer

tok = make_tokenizer(WORDS)
targets = torch.tensor([WORDS.index(d) for d in TARGET])
model_dir = args["model_dir"]
policy = LlamaForCausalLM.from_pretrained(model_dir)
torch.manual_seed(args["seed"])
value_model = LlamaForSequenceClassification.from_pretrained(model_dir, num_labels=1)
prompts = make_prompts(64, args["prompt_words"])
context_length = len(tok(prompts[0])["input_ids"])
assert all(len(tok(p)["input_ids"]) == context_length for p in prompts)

class _Out:
    def __init__(self, h): self.hidden_states = (h,)

class _Backbone(torch.nn.Module):
    def forward(self, input_ids, attention_mask=None, **kw):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        hit = (torch.isin(input_ids, targets) & (pos >= context_length) & attention_mask.bool()).float()
        return _Out((hit.cumsum(1) / args["response_length"]).unsqueeze(-1))

class ShareReward(torch.nn.Module):
    """The benchmark's reward as TRL's 'reward model': share of response slots holding a digit."""
    base_model_prefix = "backbone"
    def __init__(self):
        super().__init__(); self.backbone = _Backbone(); self.score = torch.nn.Identity()

stamps, rewards = [], []
class Clock(TrainerCallback):
    def on_log(self, a, state, control, logs=None, **kw):
        if logs and "objective/scores" in logs:
            stamps.append(time.perf_counter()); rewards.append(float(logs["objective/scores"]))

cfg = PPOConfig(
    output_dir=args["out_dir"], learning_rate=args["lr"], lr_scheduler_type="constant",
    per_device_train_batch_size=args["episodes"], gradient_accumulation_steps=1, num_mini_batches=1,
    total_episodes=args["episodes"] * args["updates"], num_ppo_epochs=args["ppo_epochs"],
    response_length=args["response_length"], temperature=args["temperature"], kl_coef=args["kl_coef"],
    stop_token="eos", missing_eos_penalty=None, local_rollout_forward_batch_size=args["episodes"],
    num_sample_generations=0, logging_steps=1, report_to=[], save_strategy="no", seed=args["seed"],
    use_cpu=True, bf16=False, max_grad_norm=1e9, disable_tqdm=True,
)
ds = Dataset.from_dict({"input_ids": [tok(p)["input_ids"] for p in prompts]})
trainer = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=None, reward_model=ShareReward(),
                     train_dataset=ds, value_model=value_model, callbacks=[Clock()],
                     peft_config=LoraConfig(r=args["lora_r"], lora_alpha=2 * args["lora_r"], lora_dropout=0.0,
                                            target_modules="all-linear", task_type="CAUSAL_LM"))
trainer.train()
n = len(stamps)
print("PEER_RESULT " + json.dumps({
    "trainer": "peer (trl 1.12.0 trl.experimental.ppo.PPOTrainer)", "updates": n,
    "updates_per_s": (n - 1) / (stamps[-1] - stamps[0]) if n > 1 else float("nan"),
    "reward_first": rewards[0], "reward_last5": sum(rewards[-5:]) / len(rewards[-5:]),
    "rewards": [round(r, 4) for r in rewards]}))
'''


def ensure_peer_venv() -> Path:
    """Create benchmarks/out/peer-venv with trl 1.12.0 (once); return its python."""
    python = PEER_VENV / "bin" / "python"
    if python.is_file():
        probe = subprocess.run([str(python), "-c", "import trl, sys; print(trl.__version__)"],
                               capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == "1.12.0":
            return python
    print(f"Creating the peer venv in {PEER_VENV} (a few minutes) ...", flush=True)
    subprocess.run(["python3", "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def run_peer(args: argparse.Namespace, model_dir: Path) -> dict:
    python = ensure_peer_venv()
    script = OUT / "ppo_bench_peer_script.py"
    script.write_text(PEER)
    payload = {k: getattr(args, k) for k in ("threads", "seed", "prompt_words", "response_length", "episodes",
                                              "updates", "ppo_epochs", "lr", "temperature", "kl_coef", "lora_r")}
    payload.update(model_dir=str(model_dir), out_dir=str(OUT / "peer-run"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    proc = subprocess.run([str(python), str(script), json.dumps(WORDS), TARGET, json.dumps(payload)],
                          capture_output=True, text=True, env=env, cwd=str(OUT), check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("PEER_RESULT "):
            return json.loads(line[len("PEER_RESULT "):])
    raise RuntimeError(f"The peer run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def peer_comparison(args: argparse.Namespace) -> list[dict]:
    model_dir = OUT / "ppo-bench-model"
    build_model(model_dir, args.hidden, args.layers, args.seed)
    results = []
    for r in range(args.repeats):  # alternate, so that load changes on a shared machine hit both sides
        for side in ("peer", "ours") if r % 2 == 0 else ("ours", "peer"):
            res = run_peer(args, model_dir) if side == "peer" else run_ours(args, model_dir)
            res["repeat"] = r
            results.append(res)
            print(f"  [{r}] {res['trainer']}: {res['updates_per_s']:.3f} updates/s, reward first "
                  f"{res['reward_first']:.3f} -> last5 {res['reward_last5']:.3f}", flush=True)
    return results


# ----------------------------------------------------------------------------- GPU
def gpu_bench(args: argparse.Namespace) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU visible on this machine"}
    from rlhf.models import load_causal_lm
    from rlhf.ppo.config import PPOConfig
    from rlhf.ppo.rewards import ComposedReward, RewardTerm
    from rlhf.ppo.trainer import PPOTrainer
    from rlhf.settings import load_settings

    settings = load_settings()
    out: dict = {}
    reward = ComposedReward([RewardTerm("digits", lambda b: [sum(c.isdigit() for c in r) / max(1, len(r))
                                                             for r in b.responses])], no_eos_penalty=-0.5)
    prompts = [f"<|im_start|>user\nRecommend five products for shopper {i}.<|im_end|>\n<|im_start|>assistant\n"
               for i in range(256)]
    for algo in ("ppo", "grpo"):
        model, tok = load_causal_lm(settings.model.policy, device="cuda", dtype="float32")
        cfg = PPOConfig.from_settings(settings.ppo, steps=args.gpu_steps, batch_size=64, mini_batch_size=16,
                                      max_new_tokens=128, tensorboard=False, checkpoint_every=0, constrained=False,
                                      num_generations=8)
        torch.cuda.reset_peak_memory_stats()
        if algo == "ppo":
            trainer = PPOTrainer(cfg, model, tok, reward, prompts)
            trainer.step()  # warm-up
            t0 = time.perf_counter()
            ms = [trainer.step() for _ in range(args.gpu_steps)]
            dt = time.perf_counter() - t0
            tokens = sum(m["response/length"] * 64 for m in ms)
        else:
            from rlhf.ppo.grpo import build_trl_trainer

            trainer = build_trl_trainer(cfg.with_(steps=args.gpu_steps + 1), model, tok, reward, prompts,
                                        output_dir=OUT / "gpu-grpo", algo="grpo")
            t0 = time.perf_counter()
            trainer.train()
            dt = (time.perf_counter() - t0) * args.gpu_steps / (args.gpu_steps + 1)
            tokens = float("nan")
        out[algo] = {"s_per_step": dt / args.gpu_steps, "samples_per_s": 64 * args.gpu_steps / dt,
                     "tokens_per_s": None if math.isnan(tokens) else tokens / dt,
                     "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
                     "device": torch.cuda.get_device_name(0)}
        del trainer, model
        torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------- demo store
def _true_utility_fn(store, heldout: list[dict]):
    """``fn(example, text) -> float``: the demo shop's hidden-preference value of a list (None off the demo)."""
    from rlhf.parsing import parse_list
    from rlhf.simulate import demo_utility
    from storage.contexts import get_contexts

    utility = demo_utility(store)
    if utility is None:
        return None
    with store.transaction() as con:
        contexts = get_contexts(con, [ex["context_id"] for ex in heldout])

    def fn(example: dict, text: str, n_items: int) -> float:
        parsed = parse_list(text, example["short_to_item"], n_items)
        return utility(contexts[example["context_id"]], [it.item_id for it in parsed.items])

    return fn


def demo_store_bench(args: argparse.Namespace) -> dict:
    """Before/after PPO on a store with a trained reward model: RM score, validity, true utility, KL.

    Every held-out context is sampled ``--demo-samples`` times before and after training (same seeds);
    the figures are means over contexts with 95% bootstrap intervals, and the after-minus-before
    difference is paired by context. "true utility" is the demo shop's hidden-preference value of the
    parsed list (what the simulated annotators judge by), so it says whether the lists really got better,
    not only whether the reward model thinks so. ``--eval-unconstrained`` also samples without the list
    grammar, where validity is not guaranteed.
    """
    import numpy as np
    import torch

    from rlhf.evaluation import bootstrap_ci
    from rlhf.models import load_causal_lm
    from rlhf.ppo.config import PPOConfig
    from rlhf.ppo.product import (
        ListGrammarConstraint,
        build_product_reward,
        load_ppo_examples,
        rm_normalization,
    )
    from rlhf.ppo.trainer import PPOTrainer
    from rlhf.reward.registry import load_reward_model
    from rlhf.runtime import open_store
    from rlhf.settings import load_settings

    torch.set_num_threads(args.threads)
    settings = load_settings(store={"data_dir": Path(args.demo_store)})
    store = open_store(settings)
    scorer = load_reward_model(store, args.rm_id, settings=settings)
    shift, scale = rm_normalization(scorer, settings)
    model, tok = load_causal_lm(settings.model.policy, device="cpu", dtype="float32")
    train = load_ppo_examples(store, settings, tok, split="train")
    heldout = load_ppo_examples(store, settings, tok, split="heldout", limit=args.heldout)
    n_items = settings.generation.list_length
    true_utility = _true_utility_fn(store, heldout)
    cfg = PPOConfig.from_settings(settings.ppo, steps=args.demo_steps, tensorboard=True, checkpoint_every=0)
    constraint = ListGrammarConstraint.from_settings(tok, settings)
    run_dir = OUT / f"demo-ppo-{time.strftime('%Y%m%dT%H%M%S')}"
    trainer = PPOTrainer(cfg, model, tok, build_product_reward(scorer, settings), train, logits_mask_fn=constraint,
                         output_dir=run_dir)
    print(f"reward model {scorer.rm_id}: heldout accuracy {scorer.card.get('metrics', {}).get('heldout_accuracy')}, "
          f"score shift {shift:.4f} scale {scale:.4f}; {len(train)} train / {len(heldout)} held-out contexts; "
          f"ppo config {cfg.to_dict()}", flush=True)

    def sample(constrained: bool, seed: int) -> dict[str, list[float]]:
        saved = trainer.constraint
        trainer.constraint = constraint if constrained else None
        torch.manual_seed(seed)
        rows: dict[str, list[float]] = {"rm": [], "valid": [], "kl": [], "utility": []}
        try:
            for i in range(0, len(heldout), cfg.batch_size):
                chunk = heldout[i: i + cfg.batch_size]
                _, raw = trainer.rollout(chunk)
                rows["rm"] += [float(x) * scale + shift for x in raw["parts"]["rm"].tolist()]  # raw RM score
                rows["valid"] += raw["valid"].tolist()
                rows["kl"] += raw["kl_sum"].tolist()
                if true_utility is not None:
                    rows["utility"] += [true_utility(ex, t, n_items) for ex, t in zip(chunk, raw["texts"])]
        finally:
            trainer.constraint = saved
        return rows

    def evaluate(tag: str) -> dict:
        out = {}
        modes = [("constrained", True)] + ([("unconstrained", False)] if args.eval_unconstrained else [])
        for mode, constrained in modes:
            runs = [sample(constrained, 1000 + k) for k in range(args.demo_samples)]
            per_ctx = {k: np.mean([r[k] for r in runs], axis=0) if runs[0][k] else np.array([]) for k in runs[0]}
            out[mode] = per_ctx
            summary = {k: bootstrap_ci(v.tolist()) for k, v in per_ctx.items() if len(v)}
            print(f"{tag:6s} {mode:13s} " + "  ".join(
                f"{k} {e.mean:.4f} [{e.lo:.4f}, {e.hi:.4f}]" for k, e in summary.items()), flush=True)
        return out

    t0 = time.perf_counter()
    before = evaluate("before")
    eval_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    history = trainer.train()
    train_s = time.perf_counter() - t0
    after = evaluate("after")
    result: dict = {"steps": args.demo_steps, "train_s": train_s, "eval_s": eval_s, "heldout_contexts": len(heldout),
                    "samples_per_context": args.demo_samples, "rm_id": scorer.rm_id, "tensorboard": str(run_dir),
                    "history": [{k: v for k, v in h.items() if k.startswith(("reward/", "kl/", "response/"))}
                                for h in history]}
    for mode in before:
        block = {}
        for k in before[mode]:
            if not len(before[mode][k]):
                continue
            b, a = before[mode][k], after[mode][k]
            block[k] = {"before": vars(bootstrap_ci(b.tolist())), "after": vars(bootstrap_ci(a.tolist())),
                        "paired_diff": vars(bootstrap_ci((a - b).tolist()))}
            d = block[k]["paired_diff"]
            print(f"{mode:13s} {k:8s} before {b.mean():.4f}  after {a.mean():.4f}  "
                  f"paired diff {d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]", flush=True)
        result[mode] = block
    return result


# ----------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", type=int, default=20, help="PPO updates per trainer")
    p.add_argument("--episodes", type=int, default=8, help="episodes (prompts) per update")
    p.add_argument("--response-length", type=int, default=24)
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--prompt-words", type=int, default=8)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--kl-coef", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=1, help="torch threads on BOTH sides")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument("--gpu", action="store_true", help="also run the GPU measurements (needs CUDA)")
    p.add_argument("--gpu-steps", type=int, default=5)
    p.add_argument("--demo-store", help="data dir of a store with contexts and a trained reward model")
    p.add_argument("--rm-id", default=None)
    p.add_argument("--demo-steps", type=int, default=200)
    p.add_argument("--heldout", type=int, default=64)
    p.add_argument("--demo-samples", type=int, default=2, help="samples per held-out context, before and after")
    p.add_argument("--eval-unconstrained", action="store_true",
                   help="also evaluate without the list grammar (validity is then not guaranteed)")
    p.add_argument("--json", help="also write all results to this JSON file")
    args = p.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"# PPO benchmark  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"host: {platform.platform()}, python {platform.python_version()}, torch {torch.__version__}, "
          f"cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}, cuda {torch.cuda.is_available()}")
    results: dict = {"args": vars(args)}
    if not args.skip_peer:
        print(f"\n## peer comparison: {args.layers}-layer Llama (hidden {args.hidden}, vocab {len(WORDS)}), "
              f"{args.episodes} episodes x {args.response_length} tokens, {args.ppo_epochs} PPO epochs, "
              f"LoRA r={args.lora_r}, {args.updates} updates, {args.threads} thread(s)")
        runs = peer_comparison(args)
        ours = [r for r in runs if r["trainer"].startswith("ours")]
        peer = [r for r in runs if r["trainer"].startswith("peer")]
        mean = lambda xs, k: sum(x[k] for x in xs) / len(xs)
        ratio = mean(ours, "updates_per_s") / mean(peer, "updates_per_s")
        print(f"\nours: {mean(ours, 'updates_per_s'):.3f} updates/s, reward last5 {mean(ours, 'reward_last5'):.3f} "
              f"(first {mean(ours, 'reward_first'):.3f})")
        print(f"peer: {mean(peer, 'updates_per_s'):.3f} updates/s, reward last5 {mean(peer, 'reward_last5'):.3f} "
              f"(first {mean(peer, 'reward_first'):.3f})")
        print(f"speed ratio ours/peer: {ratio:.2f}x (goal >= 1.5)")
        results["peer_comparison"] = {"runs": runs, "ratio": ratio}
    if args.gpu:
        print("\n## GPU: SmolLM2-135M, batch 64, 128 new tokens")
        results["gpu"] = gpu_bench(args)
        print(json.dumps(results["gpu"], indent=2))
    if args.demo_store:
        print(f"\n## demo store: {args.demo_steps} PPO steps against the trained reward model")
        results["demo"] = demo_store_bench(args)
        print(json.dumps({k: v for k, v in results["demo"].items() if k != "history"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
