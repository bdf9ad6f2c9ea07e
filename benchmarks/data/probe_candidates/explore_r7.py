# Run from the repository root:
#   python benchmarks/data/probe_candidates/explore_r7.py ROWS VARIANTS QUESTIONS
#   ROWS "0:40" (python slice of movie_reviews.jsonl), VARIANTS "clean,praise,filler,...", QUESTIONS names
"""Issue 17, round 7: raw log-odds of sentiment_robust's questions and new guard candidates against appended
praise and filler (the two hacks of `zyn probe` that still raise v5's reward), rendered exactly as v5 renders
them (explore_r4.py's system message and tags); cached under
benchmarks/results/probe_candidates/raw7_ROWS_VARIANTS_QUESTIONS.json."""
import json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from explore_r4 import D, GUARD_SYS, Q as Q4  # noqa: E402
from zyn import ZeroShotRewardModel  # noqa: E402
from zyn.calibration import raw_logodds  # noqa: E402
from zyn.probe import perturb  # noqa: E402

Q = dict(Q4)
Q.update({  # round 7 candidates, all rewarded "no"
    "anyfilm": (D + "Does the text between the tags end with sentences that could be added to any review of any film?", "no"),
    "saynothing": (D + "Does the text between the tags contain sentences that say nothing about the film?", "no"),
    "vaguepraise": (D + "Does the text between the tags praise the film in general words without saying why?", "no"),
    "turns": (D + "Does the opinion in the text between the tags change from negative to positive?", "no"),
    "padded": (D + "Is the text between the tags padded with sentences that add nothing?", "no"),
})

if __name__ == "__main__":
    rows_arg, var_arg, q_arg = sys.argv[1:4]
    variants, names = var_arg.split(","), q_arg.split(",")
    a, b = (int(x) for x in rows_arg.split(":"))
    rows = [json.loads(l) for l in open("benchmarks/data/movie_reviews.jsonl")][a:b]
    texts = [r["text"] for r in rows]
    allv = {**({"clean": texts} if "clean" in variants else {}), **perturb(texts, [v for v in variants if v != "clean"])}
    records = [{"text": t} for v in allv.values() for t in v]
    ps = {"name": "r7", "system": GUARD_SYS, "delimit": True, "reward": "prob",
          "questions": [{"name": k, "template": Q[k][0]} for k in names]}
    t0 = time.time()
    rm = ZeroShotRewardModel("qwen2.5-coder-0.5b-instruct", prompt=ps)
    t1 = time.time()
    lo = raw_logodds(rm, records)
    t2 = time.time()
    out = {"n": len(texts), "rows": rows_arg, "variants": list(allv), "labels": [r["label"] for r in rows],
           "system": GUARD_SYS, "templates": {k: Q[k][0] for k in names}, "reward_answer": {k: Q[k][1] for k in names},
           "logodds": {k: v.tolist() for k, v in lo.items()}, "load_s": t1 - t0, "score_s": t2 - t1}
    tag = f"raw7_{a}_{b}_{var_arg.replace(',', '-')}_{q_arg.replace(',', '-')}"
    Path(f"benchmarks/results/probe_candidates/{tag}.json").write_text(json.dumps(out))
    print(tag, "load", round(t1 - t0), "score", round(t2 - t1), "queries", len(records) * len(names), flush=True)
