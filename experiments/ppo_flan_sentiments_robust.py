#!/usr/bin/env python
"""ZYN robust ensemble: FilmAffinity-style reviews (yes) that are not too repetitive (no), Eq. 4.

    python experiments/ppo_flan_sentiments_robust.py                      # offline CPU default (gemma-3-270m policy, Qwen judge)
    python experiments/ppo_flan_sentiments_robust.py --config experiments/configs/paper_gpu.yaml   # the paper's scale, on a GPU

The reward is zyn's: the judge answers the questions of prompts/sentiment_robust.yaml and the trainer
gets `ZeroShotRewardModel(...).as_trl_reward()`. The loop lives in experiments/common/.

On the CPU defaults (0.5B judge) this ensemble does not stop the policy from repeating itself: in
40 steps its reward rose while P(positive) stayed flat and repetition went up (benchmarks/RESULTS.md,
"Reward hacking in RL"). The best configuration found there is the plain question plus a lexical
repetition penalty: python experiments/ppo_flan_sentiments.py --config experiments/configs/no_repeats.yaml
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import DATA, Experiment, main  # noqa: E402

EXPERIMENT = Experiment(
    name="ppo_flan_sentiments_robust", prompts="sentiment_robust",
    dataset=str(DATA / "movie_openers.txt"), eval_dataset=str(DATA / "movie_openers_eval.txt"),
    description=__doc__.splitlines()[0],
    # independent evaluators, logged and plotted, never optimised: the lexicon, and P(positive) from the plain sentiment question
    defaults={"monitors": ["vader", "sentiment"]},
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
