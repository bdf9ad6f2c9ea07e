#!/usr/bin/env python
"""ZYN sentiment: train a policy to continue movie-review openers positively (the judge asks
"Is the reviewer's opinion of the film favourable?", prompts/sentiment.yaml).

    python experiments/ppo_flan_sentiments.py                      # offline CPU default (gemma-3-270m policy, Qwen judge)
    python experiments/ppo_flan_sentiments.py --config experiments/configs/paper_gpu.yaml   # the paper's scale, on a GPU

The reward is zyn's: the judge answers the questions of prompts/sentiment.yaml and the trainer
gets `ZeroShotRewardModel(...).as_trl_reward()`. The loop lives in experiments/common/.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import DATA, Experiment, main  # noqa: E402

EXPERIMENT = Experiment(
    name="ppo_flan_sentiments", prompts="sentiment",
    dataset=str(DATA / "movie_openers.txt"), eval_dataset=str(DATA / "movie_openers_eval.txt"),
    description=" ".join(__doc__.split("\n\n")[0].split()),  # the first paragraph
    # independent evaluators, logged and plotted, never optimised: the lexicon, and the robust ensemble's P (repetition shows there)
    defaults={"monitors": ["vader", "sentiment_robust"]},
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
