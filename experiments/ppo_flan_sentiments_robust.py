#!/usr/bin/env python
"""ZYN robust sentiment: positive movie-review continuations that do not repeat themselves.

    python experiments/ppo_flan_sentiments_robust.py                      # offline CPU default (gemma-3-270m policy, Qwen judge)
    python experiments/ppo_flan_sentiments_robust.py --prompts sentiment_robust   # the paper's idea: a yes/no ensemble
    python experiments/ppo_flan_sentiments_robust.py --config experiments/configs/paper_gpu.yaml   # the paper's scale, on a GPU

The reward is zyn's: `ZeroShotRewardModel(...).as_trl_reward()` over prompts/sentiment_norepeat.yaml,
the question of the plain experiment (prompts/sentiment.yaml) with a counted repetition penalty
(10 x the share of the completion's word trigrams seen before, off the log-odds). The loop lives in
experiments/common/.

Why not the ensemble: the ZYN paper stops repetition with a second yes/no question, and
prompts/sentiment_robust.yaml does that for `zyn probe`'s hacks on held-out reviews; but on the CPU
default judge (0.5B) a policy trained against it (v3, v4 and v5 in turn) raised the reward while
P(positive) stayed flat or fell, by repeating lines, hyphenated non-words or web-page fragments that
its guard questions score well. Counting repetition instead keeps the plain question in charge:
P(positive) 0.12 -> 0.43 (the plain run: 0.36) with repeated bigrams 0.006 (plain: 0.149)
(benchmarks/RESULTS.md, "Reward hacking in RL"). Try the ensemble on a larger judge.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import DATA, Experiment, main  # noqa: E402

EXPERIMENT = Experiment(
    name="ppo_flan_sentiments_robust", prompts="sentiment_norepeat",
    dataset=str(DATA / "movie_openers.txt"), eval_dataset=str(DATA / "movie_openers_eval.txt"),
    description=" ".join(__doc__.split("\n\n")[0].split()),  # the first paragraph
    # evaluators logged and plotted, never optimised: the lexicon, P(positive) from the plain sentiment
    # question (the same question without the penalty, as the plain run reports it), and the ensemble
    defaults={"monitors": ["vader", "sentiment", "sentiment_robust"]},
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
