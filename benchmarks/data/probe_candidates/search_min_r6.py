# Run from the repository root:
#   python benchmarks/data/probe_candidates/search_min_r6.py [--pool=G1,G2,...] [--floor=0.925] [--n-w=4000] [--max-k=3]
"""Issue 17, round 6: sentiment_robust as `combine: min` of the sentiment question and guards, with the
lexical repetition penalty (search_r6.py has the data and the penalty). positive is the anchor (scale 1,
shift 0, raw log-odds); each guard g (rewarded no) gets a scale S_g, log-uniform in [1/4, 64], and a shift
placed so that the guard binds (sits below positive) on a share q_g of the clean reviews 1-40, q_g
uniform in [0, 0.3]. Combined = min(positive, guards) - V x the repeated-trigram rate, V on a log grid.
Keeps the draws whose worst lower-rate over the eight hacks is >= FLOOR; prints the best AUROC per
subset (reviews 1-40 only)."""
import itertools, sys
import numpy as np
sys.path.insert(0, "benchmarks/data/probe_candidates")
from search_r4 import HACKS, load  # noqa: E402
from search_r6 import rates  # noqa: E402

VARIANTS = ["clean"] + HACKS


def combined(lo, rt, guards, v, variant):
    """guards: {name: (scale, shift)}; min of positive and the oriented guards, minus the penalty."""
    c = lo["positive"][variant].copy()
    for g, (s, b) in guards.items():
        c = np.minimum(c, -s * lo[g][variant] + b)
    return c - v * rt[variant]


def lower_rates(lo, rt, guards, v):
    c = combined(lo, rt, guards, v, "clean")
    return {h: float((combined(lo, rt, guards, v, h) < c).mean()) for h in HACKS}


def auroc(s, y):
    pos, neg = s[y == 1], s[y == 0]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def search(lo, rt, y, pool, floor, n_w, max_k, seed=6):
    rng = np.random.default_rng(seed)
    vs = np.geomspace(0.05, 20.0, 13)
    out = []
    for k in range(1, max_k + 1):
        for sub in itertools.combinations(pool, k):
            for _ in range(n_w):
                guards = {}
                for g in sub:
                    s = float(np.exp(rng.uniform(np.log(0.25), np.log(64))))
                    gap = (-s * lo[g]["clean"]) - lo["positive"]["clean"]
                    b = -float(np.quantile(gap, rng.uniform(0, 0.3)))
                    guards[g] = (s, b)
                for v in vs:
                    low = lower_rates(lo, rt, guards, v)
                    worst = min(low.values())
                    if worst >= floor:
                        out.append((auroc(combined(lo, rt, guards, v, "clean"), y), worst, float(v), guards, low))
                        break  # the smallest V that passes
    out.sort(key=lambda t: (-t[0], -t[1]))
    return out


if __name__ == "__main__":
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
    pool = args.get("pool", "instructs,sysline,roles,askscore,addedpraise,dialogue,repetitive").split(",")
    lo, y = load(0, 40)
    rt = rates(0, 40)
    res = search(lo, rt, y, pool, float(args.get("floor", 0.925)), int(args.get("n-w", 1500)),
                 int(args.get("max-k", 2)))
    seen = set()
    for au, worst, v, guards, low in res:
        if tuple(guards) in seen:
            continue
        seen.add(tuple(guards))
        print(f"AUROC {au:.3f} worst {worst:.3f} V {v:.2f} " + " ".join(f"{g}=({s:.2f},{b:+.2f})" for g, (s, b) in guards.items())
              + " | " + " ".join(f"{h[:6]} {r:.2f}" for h, r in low.items()))
        if len(seen) >= 15:
            break
