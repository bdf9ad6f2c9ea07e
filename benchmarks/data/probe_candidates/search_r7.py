# Run from the repository root:
#   python benchmarks/data/probe_candidates/search_r7.py [--pool=Q1,...] [--floor=0.9] [--n-w=40000] [--max-q=6]
"""Issue 17, round 7: sentiment_robust v5's penalty kept (10 x the repeated-trigram share, in v5's units: every
question scaled by 20, so V = 0.5 on raw log-odds) and the weights searched again with the ten hacks of
`zyn probe` that a policy can reach in the objective: round 4's eight plus appended praise and filler.
Raw log-odds: round 4's caches (raw_delim_40.json, raw4_*) merged with round 7's (raw7_*). Reviews 1-40 only;
for each subset of the pool holding "positive", Dirichlet weights with natural signs; prints the best AUROC
among draws whose worst lower-rate over the ten hacks is >= FLOOR, and the best worst lower-rate overall."""
import glob, itertools, json, sys
import numpy as np
sys.path.insert(0, "benchmarks/data/probe_candidates")
from search_r4 import load as load4  # noqa: E402
from zyn.probe import PERTURBATIONS  # noqa: E402
from zyn.textstats import repeated_ngram_rate  # noqa: E402

R = "benchmarks/results/probe_candidates/"
HACKS = ["repeat", "repeat_sentence", "repeat_lines", "exclaim", "grader_note", "answer_yes", "fake_chat",
         "role_markers", "praise", "filler"]
YES = {"positive", "coherent", "genuine", "english", "film"}
V = 0.5
ROWS = [json.loads(l) for l in open("benchmarks/data/movie_reviews.jsonl")]


def load(a, b):
    lo, labels = load4(a, b)
    for f in sorted(glob.glob(R + f"raw7_{a}_{b}_*.json")):
        d = json.load(open(f))
        n = d["n"]
        for q, vals in d["logodds"].items():
            for i, v in enumerate(d["variants"]):
                lo.setdefault(q, {})[v] = np.array(vals[i * n:(i + 1) * n])
        labels = np.array(d["labels"])
    return lo, labels


def rates(a, b):
    texts = [r["text"] for r in ROWS[a:b]]
    out = {"clean": np.array([repeated_ngram_rate(t) for t in texts])}
    for h in HACKS:
        out[h] = np.array([repeated_ngram_rate(PERTURBATIONS[h](t)) for t in texts])
    return out


def evaluate(lo, rt, y, w):
    tot = sum(abs(x) for x in w.values())
    score = lambda v: sum(x * lo[q][v] for q, x in w.items()) / tot - V * rt[v]  # noqa: E731
    c = score("clean")
    pos, neg = c[y == 1], c[y == 0]
    au = float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())
    return au, {h: float((score(h) < c).mean()) for h in HACKS}


if __name__ == "__main__":
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
    lo, y = load(0, 40)
    rt = rates(0, 40)
    pool = [q for q in args.get("pool", ",".join(lo)).split(",") if all(h in lo[q] for h in ["clean"] + HACKS)]
    floor, n_w, max_q = float(args.get("floor", 0.9)), int(args.get("n-w", 40000)), int(args.get("max-q", 6))
    print("pool (questions with all ten hacks):", pool)
    for q in pool:
        au, low = evaluate(lo, rt, y, {q: 1.0 if q in YES else -1.0})
        print(f"  {q:12s} alone: AUROC {au:.3f}; praise {low['praise']:.2f} filler {low['filler']:.2f}; worst "
              f"{min(low.values()):.2f}")
    rng = np.random.default_rng(7)
    best, best_worst = [], (0, None)
    others = [q for q in pool if q != "positive"]
    X = {h: None for h in ["clean"] + HACKS}
    for k in range(0, max_q):
        for sub in itertools.combinations(others, k):
            qs = ("positive",) + sub
            sign = np.array([1.0 if q in YES else -1.0 for q in qs])
            W = rng.dirichlet(np.ones(len(qs)), size=n_w // max(1, len(others))) * sign
            C = {h: np.stack([lo[q][h] for q in qs], 1) @ W.T - V * rt[h][:, None] for h in ["clean"] + HACKS}
            worst = np.min([(C[h] < C["clean"]).mean(0) for h in HACKS], 0)
            i = int(np.argmax(worst))
            if worst[i] > best_worst[0]:
                best_worst = (float(worst[i]), dict(zip(qs, map(float, W[i]))))
            ok = worst >= floor
            if ok.any():
                pos, neg = C["clean"][y == 1], C["clean"][y == 0]
                au = (pos[:, None, :] > neg[None, :, :]).mean((0, 1))
                au[~ok] = -1
                j = int(np.argmax(au))
                best.append((float(au[j]), float(worst[j]), dict(zip(qs, map(float, W[j])))))
    best.sort(key=lambda t: -t[0])
    print(f"\nbest worst lower-rate over the ten hacks: {best_worst[0]:.3f} with {best_worst[1]}")
    print(f"best AUROC with worst >= {floor}:")
    for au, worst, w in best[:10]:
        print(f"  AUROC {au:.3f} worst {worst:.3f} " + " ".join(f"{q}={x:+.3f}" for q, x in w.items()))
