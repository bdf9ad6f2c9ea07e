"""Trainer glue: the TRL trainer classes, the paper's trlx PPO config, freezing the policy."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TRLX_PAPER, ExperimentError


def trl_classes(name: str):
    """(Trainer, Config) of TRL for "grpo" or "rloo"."""
    if name == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOTrainer, RLOOConfig
    from trl import GRPOConfig, GRPOTrainer

    return GRPOTrainer, GRPOConfig


def trlx_config(cfg: dict[str, Any]):  # pragma: no cover - trlx is not installable here
    """The paper's trlx PPO config (TRLX_PAPER, overridden by the config's ``trlx`` mapping)."""
    from trlx.data.default_configs import default_ppo_config

    p = {**TRLX_PAPER, **cfg["trlx"]}
    c = default_ppo_config()
    c.model.model_path = cfg["policy"]
    c.model.num_layers_unfrozen = p["num_layers_unfrozen"]
    c.tokenizer.tokenizer_path = cfg["policy"]
    c.train.batch_size = p["batch_size"]
    c.train.total_steps = p["total_steps"]
    c.train.eval_interval = p["eval_interval"]
    c.train.seq_length = p["seq_length"]
    c.train.seed = cfg["seed"]
    c.train.checkpoint_dir = str(Path(cfg["output_dir"]) / "trlx")
    c.train.tracker = None
    c.optimizer.kwargs["lr"] = p["learning_rate"]
    c.scheduler.kwargs["eta_min"] = p["learning_rate"]
    c.method.init_kl_coef = p["init_kl_coef"]
    c.method.num_rollouts = p["num_rollouts"]
    c.method.chunk_size = p["chunk_size"]
    c.method.ppo_epochs = p["ppo_epochs"]
    c.method.gen_kwargs["max_new_tokens"] = p["max_new_tokens"]
    return c


def freeze(model, embeddings: bool, layers: int) -> int:
    """Freeze the input embeddings (and a tied LM head) and the `layers` lowest blocks; return trainable count."""
    if embeddings:
        emb = model.get_input_embeddings()
        if emb is not None:
            emb.weight.requires_grad_(False)
        pos = getattr(getattr(model, "transformer", None), "wpe", None)  # GPT-2 position embeddings
        if pos is not None:
            pos.weight.requires_grad_(False)
    if layers:
        blocks = _blocks(model)
        if blocks is None:
            raise ExperimentError("freeze_layers: cannot find this model's list of transformer blocks")
        for block in list(blocks)[:layers]:
            block.requires_grad_(False)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n == 0:
        raise ExperimentError("every policy parameter is frozen; lower freeze_layers")
    return n


def _blocks(model):
    import torch

    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    return None
