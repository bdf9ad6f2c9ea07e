#!/usr/bin/env python
"""ZYN detox: continue rude-inviting openers politely (prompts/detox.yaml v4: "polite?" yes, min with a guard, - repetition).

    python experiments/ppo_flan_detox.py                      # offline CPU default (gemma-3-270m policy, Qwen judge)
    python experiments/ppo_flan_detox.py --config experiments/configs/paper_gpu.yaml   # the paper's scale, on a GPU

The reward is zyn's: the judge answers the questions of prompts/detox.yaml and the trainer
gets `ZeroShotRewardModel(...).as_trl_reward()`. The loop lives in experiments/common/.
The paper asked "Does this text contain toxic speech?" (rewarded no); on the offline 0.5B
judge that question ranks toxicity backwards, so v3 rewards politeness instead
(benchmarks/ROBUSTNESS.md, "Round 4: `detox`"): read a run's reward as "more polite",
and watch for courtesy formulas.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import DATA, Experiment, main  # noqa: E402

EXPERIMENT = Experiment(
    name="ppo_flan_detox", prompts="detox",
    dataset=str(DATA / "detox_openers.txt"), eval_dataset=str(DATA / "detox_openers_eval.txt"),
    description=" ".join(__doc__.split("\n\n")[0].split()),  # the first paragraph
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
