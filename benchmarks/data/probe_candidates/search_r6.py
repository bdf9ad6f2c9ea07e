# Run from the repository root:
#   python benchmarks/data/probe_candidates/search_r6.py [--pool=Q1,Q2,...] [--floor=0.925] [--n-w=20000] [--held-out]
"""Issue 17, round 6: sentiment_robust with a lexical repetition penalty (`penalties:` in the prompt set,
zyn.prompts.Penalty: weight x the share of repeated word trigrams of the judged text, taken off the
combined log-odds). The judge's raw log-odds come from round 4's caches (v4's layout: system message,
<review> tags; raw_delim_40.json, raw4_*.json); the penalty is computed here from the same perturbed
texts (zyn.probe), so no model runs. Search on reviews 1-40 only: for every subset of the pool that
holds "positive", random weights (Dirichlet, natural signs) and a penalty weight V on a log grid;
the best AUROC among the draws whose worst lower-rate over the eight hacks is >= FLOOR (ties: the
larger worst rate). With --held-out, the chosen weights are also scored on reviews 41-80 (all hacks)
and 81-110 (clean only): run that once, after the choice."""
import itertools, json, sys
import numpy as np
sys.path.insert(0, "benchmarks/data/probe_candidates")
from search_r4 import HACKS, load  # noqa: E402
from zyn.probe import PERTURBATIONS  # noqa: E402
from zyn.textstats import repeated_ngram_rate  # noqa: E402

YES = {"positive", "coherent", "genuine", "english", "film", "varied", "filmaffinity"}
ROWS = [json.loads(l) for l in open("benchmarks/data/movie_reviews.jsonl")]
N_GRAM = 3


def rates(a, b):
    texts = [r["text"] for r in ROWS[a:b]]
    out = {"clean": np.array([repeated_ngram_rate(t, N_GRAM) for t in texts])}
    for h in HACKS:
        out[h] = np.array([repeated_ngram_rate(PERTURBATIONS[h](t), N_GRAM) for t in texts])
    return out


def auroc(s, y):
    pos, neg = s[y == 1], s[y == 0]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def score(lo, rt, w, v, variant):
    """Combined log-odds (weights normalised, natural signs) minus v x the repeated-trigram rate."""
    tot = sum(abs(x) for x in w.values())
    return sum(x * lo[q][variant] for q, x in w.items()) / tot - v * rt[variant]


def evaluate(lo, rt, y, w, v, hacks=HACKS):
    c = score(lo, rt, w, v, "clean")
    low = {h: float((score(lo, rt, w, v, h) < c).mean()) for h in hacks if all(h in lo[q] for q in w)}
    return auroc(c, y), low


def search(lo, rt, y, pool, floor, n_w, seed=6):
    rng = np.random.default_rng(seed)
    vs = np.geomspace(0.01, 2.0, 25)
    best = []
    others = [q for q in pool if q != "positive"]
    for k in range(0, len(others) + 1):
        for sub in itertools.combinations(others, k):
            qs = ("positive",) + sub
            X = {h: np.stack([lo[q][h] for q in qs], 1) for h in ["clean"] + HACKS}
            sign = np.array([1.0 if q in YES else -1.0 for q in qs])
            W = rng.dirichlet(np.ones(len(qs)), size=n_w // len(vs)) * sign  # (m, Q)
            for v in vs:
                C = {h: X[h] @ W.T - v * rt[h][:, None] for h in X}             # (n, m)
                worst = np.min([(C[h] < C["clean"]).mean(0) for h in HACKS], 0)
                ok = worst >= floor
                if not ok.any():
                    continue
                pos, neg = C["clean"][y == 1], C["clean"][y == 0]
                au = ((pos[:, None, :] > neg[None, :, :]).mean((0, 1)))
                au[~ok] = -1
                i = int(np.argmax(au))
                best.append((float(au[i]), float(worst[i]), float(v), dict(zip(qs, map(float, W[i])))))
    best.sort(key=lambda t: (-t[0], -t[1]))
    return best


if __name__ == "__main__":
    args = dict(a.lstrip("-").split("=", 1) if "=" in a else (a.lstrip("-"), "1") for a in sys.argv[1:])
    pool = args.get("pool", "positive,instructs,coherent,sysline,roles,askscore,genuine").split(",")
    floor, n_w = float(args.get("floor", 0.925)), int(args.get("n-w", 20000))
    lo, y = load(0, 40)
    rt = rates(0, 40)
    for h in ["clean"] + HACKS:
        print(f"repeated-trigram rate, reviews 1-40, {h}: mean {rt[h].mean():.3f} min {rt[h].min():.3f}")
    best = search(lo, rt, y, pool, floor, n_w)
    print(f"\nbest per subset and V, AUROC on 1-40 with worst lower-rate >= {floor}:")
    seen = set()
    for au, worst, v, w in best:
        key = tuple(w)
        if key in seen:
            continue
        seen.add(key)
        print(f"AUROC {au:.3f} worst {worst:.3f} V {v:.3f} " + " ".join(f"{q}={x:+.3f}" for q, x in w.items()))
        if len(seen) >= 12:
            break
    if "held-out" in args:
        au, worst, v, w = best[0]
        lo2, y2 = load(40, 80)
        a2, low2 = evaluate(lo2, rates(40, 80), y2, w, v)
        lo3, y3 = load(80, 110)
        a3 = auroc(score(lo3, rates(80, 110), w, v, "clean"), y3)
        print(f"\nheld out 41-80: AUROC {a2:.3f}; lower " + ", ".join(f"{h} {r:.3f}" for h, r in low2.items()))
        print(f"held out 81-110 (clean): AUROC {a3:.3f}")
