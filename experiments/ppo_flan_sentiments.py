#!/usr/bin/env python
"""ZYN sentiment: train a policy to continue movie-review openers positively ("Is this movie review positive?").

    python experiments/ppo_flan_sentiments.py                      # offline CPU default (gemma-3-270m policy, Qwen judge)
    python experiments/ppo_flan_sentiments.py --config experiments/configs/paper_gpu.yaml   # the paper's scale, on a GPU

The reward is zyn's: the judge answers the questions of prompts/sentiment.yaml and the trainer
gets `ZeroShotRewardModel(...).as_trl_reward()`. The loop lives in experiments/common/.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import DATA, Experiment, main  # noqa: E402
from zyn import ZeroShotRewardModel  # noqa: E402

PROMPTS = "sentiment"


def reward_model(judge, prompt=PROMPTS, **options):
    """The zyn reward model; common/run.py hands `.as_trl_reward()` to the trainer (trlx: the model itself)."""
    return ZeroShotRewardModel(judge, prompt=prompt, **options)


EXPERIMENT = Experiment(
    name="ppo_flan_sentiments", prompts=PROMPTS, reward_model=reward_model,
    dataset=str(DATA / "movie_openers.txt"), eval_dataset=str(DATA / "movie_openers_eval.txt"),
    description=__doc__.splitlines()[0],
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
