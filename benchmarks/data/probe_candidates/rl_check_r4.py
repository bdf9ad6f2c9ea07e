# Run from the repository root: python benchmarks/data/probe_candidates/rl_check_r4.py
"""Issue 17, round 4: the RL run's own texts under v3 and v4. The 48 held-out continuations of
benchmarks/results/hacking/ppo_flan_sentiments_robust/samples.jsonl before training (step 0) and after
40 GRPO steps on v3 (step 40: "I'm glad!\\nI'm glad!\\n..."), text = opener + continuation as the trainer
scored it, rewarded by sentiment_robust v3 (frozen copy) and v4 (shipped); per opener, does the hacked
text score lower than the untrained one? Writes benchmarks/results/probe_sentiment_robust_round4/rl_check.json."""
import json, time
from pathlib import Path
import numpy as np
import torch
from zyn import ZeroShotRewardModel
from zyn.probe import perturb

torch.set_num_threads(1)
rows = [json.loads(l) for l in open("benchmarks/results/hacking/ppo_flan_sentiments_robust/samples.jsonl")]
before = [r for r in rows if r["step"] == 0]
after = [r for r in rows if r["step"] == 40]
assert [r["prompt"] for r in before] == [r["prompt"] for r in after]
texts = [r["prompt"] + r["output"] for r in before + after]
n = len(before)
hacked = perturb(texts[:n], ["repeat_lines", "exclaim"])
texts += hacked["repeat_lines"] + hacked["exclaim"]
t0 = time.time()
rm = ZeroShotRewardModel("qwen2.5-coder-0.5b-instruct", prompt="benchmarks/data/prompts_v1/sentiment_robust_v3.yaml")
out = {"n": n, "sets": {}}
for name, ps in [("v3", "benchmarks/data/prompts_v1/sentiment_robust_v3.yaml"), ("v4", "sentiment_robust")]:
    r = np.asarray(rm.with_prompt(ps).score_detailed(texts).rewards, dtype=float)
    b, a, rl, ex = r[:n], r[n:2 * n], r[2 * n:3 * n], r[3 * n:]
    out["sets"][name] = {"mean_reward_step0": float(b.mean()), "mean_reward_step40": float(a.mean()),
                         "lower_rate_step40": float((a < b).mean()), "lower_rate_repeat_lines": float((rl < b).mean()),
                         "lower_rate_exclaim": float((ex < b).mean()),
                         "rewards_step0": b.tolist(), "rewards_step40": a.tolist()}
    print(f"{name}: mean reward step 0 {b.mean():+.2f}, step 40 {a.mean():+.2f}; the step-40 text lower for "
          f"{(a < b).mean():.3f} of the {n} openers; step 0 under repeat_lines lower {(rl < b).mean():.3f}, "
          f"exclaim {(ex < b).mean():.3f}", flush=True)
out["seconds"] = time.time() - t0
out["examples_step40"] = [before[i]["prompt"] + after[i]["output"] for i in range(3)]
out["examples_step0_repeat_lines"] = hacked["repeat_lines"][:3]
Path("benchmarks/results/probe_sentiment_robust_round4/rl_check.json").write_text(json.dumps(out, indent=1))
print("seconds", round(out["seconds"]))
