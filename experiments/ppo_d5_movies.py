#!/usr/bin/env python
"""ZYN D5: steer movie reviews towards the property "This review is about a funny sci-fi" (D5 validator template).

    python experiments/ppo_d5_movies.py                      # offline CPU default (gemma-3-270m policy, Qwen judge)
    python experiments/ppo_d5_movies.py --config experiments/configs/paper_gpu.yaml   # the paper's scale, on a GPU

The reward is zyn's: the judge answers the questions of prompts/d5_funny_scifi.yaml and the trainer
gets `ZeroShotRewardModel(...).as_trl_reward()`. The loop lives in experiments/common/.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import DATA, Experiment, main  # noqa: E402

EXPERIMENT = Experiment(
    name="ppo_d5_movies", prompts="d5_funny_scifi",
    dataset=str(DATA / "movie_openers.txt"), eval_dataset=str(DATA / "movie_openers_eval.txt"),
    description=" ".join(__doc__.split("\n\n")[0].split()),  # the first paragraph
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
