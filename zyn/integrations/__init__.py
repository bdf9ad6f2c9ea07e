"""Ready hooks for the RL trainers, one module per trainer.

    trl        TRLReward, AsyncTRLReward        GRPOTrainer / RLOOTrainer ``reward_funcs=[...]``
    trlx       reward_fn, metric_fn             ``trlx.train(reward_fn=..., metric_fn=...)``
    verl       compute_score, compute_score_async   ``custom_reward_function.path/name``
    swift      ZynORM, ZynRMPlugin, register    ms-swift ``orms[name]`` / ``rm_plugins[name]``
    openrlhf   reward_func, split_query         ``--remote_rm_url <file.py>`` or the zyn server
    shared     one reward model per process, configured by arguments or ZYN_* variables

Each module imports its trainer only where it registers into it, so importing a hook
never needs the trainer installed. The hooks depend on `zyn.model`, never the reverse
(``ZeroShotRewardModel.as_trl_reward`` imports `trl` here lazily).
"""
