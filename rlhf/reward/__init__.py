"""The pairwise reward model: dataset from a snapshot, TRL RewardTrainer + LoRA or the small-data probe,
evaluation, registry, scoring.

Modules (import them directly; nothing heavy is imported here):

- :mod:`rlhf.reward.dataset` — ``build_reward_dataset(snapshot, settings) -> RewardDataset``
- :mod:`rlhf.reward.backbones` — ``resolve_backbone``, ``load_backbone``, ``encode_pair``
- :mod:`rlhf.reward.train` — ``train_reward_model``, ``train_from_snapshot``, ``train_from_store``, ``choose_method``
- :mod:`rlhf.reward.probe` — ``train_probe``, ``ProbeScorer``: a Bradley–Terry head on a frozen encoder
- :mod:`rlhf.reward.evaluate` — ``evaluate_dataset``, ``evaluate_frame``, pure metric functions
- :mod:`rlhf.reward.registry` — ``save_reward_model``, ``load_reward_model``, ``list_reward_models``
- :mod:`rlhf.reward.score` — ``RewardScorer.score(prompts, responses, batch_size)``, ``score_generations``
"""
