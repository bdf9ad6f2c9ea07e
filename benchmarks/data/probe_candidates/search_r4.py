# Run from the repository root:
#   python benchmarks/data/probe_candidates/search_r4.py [Q1,Q2,...] [--floors=0.76,0.80] [--max-q=6] [--n-w=30000]
#       [--must=positive] [--exclude=HACK,...] [--min=HACK:RATE,...]
"""Issue 17, round 4: signed weights for sentiment_robust over v3's four questions and the round-4
guard candidates, chosen on reviews 1-40 only (choice data). Raw log-odds from raw_delim_40.json
(v3's questions, six hacks) and raw4_0_40_* (the new hacks, the new questions). For every subset
of the pool holding "positive", 30,000 random weight vectors (natural signs: yes-rewarded +,
no-rewarded -, seeded); per AUROC floor, the best worst lower-rate over the eight hacks, ties
broken by the worst "margin" lower-rate (the share of pairs lowered by more than MARGIN times the
spread (std) of the clean combined scores: a guard against pairs that barely move), then the mean
lower-rate, then AUROC.
Prints v3 first, on the same data."""
import glob, itertools, json, sys
import numpy as np

R = "benchmarks/results/probe_candidates/"
HACKS = ["repeat", "repeat_sentence", "repeat_lines", "exclaim", "grader_note", "answer_yes", "fake_chat",
         "role_markers"]
YES = {"positive", "filmaffinity", "varied", "genuine", "coherent", "english", "film"}
MARGIN = 0.1
V3 = {"positive": 0.17, "repetitive": -1.0, "instructs": -0.43, "genuine": 0.62}


def load(a=0, b=40):
    """{question: {variant: array(n)}} from every cache covering rows a:b; labels."""
    lo, labels = {}, None
    files = [R + "raw_delim_40.json"] if (a, b) == (0, 40) else []
    files += sorted(glob.glob(R + f"raw4_{a}_{b}_*.json"))
    for f in files:
        d = json.load(open(f))
        n = d["n"]
        labels = np.array(d["labels"])
        for q, vals in d["logodds"].items():
            for i, v in enumerate(d["variants"]):
                lo.setdefault(q, {})[v] = np.array(vals[i * n:(i + 1) * n])
    return lo, labels


def metrics(lo, labels, w):
    """(AUROC, {hack: lower rate}, {hack: margin lower rate}) of the signed weights w on raw log-odds."""
    qs = list(w)
    c = sum(w[q] * lo[q]["clean"] for q in qs)
    pos, neg = c[labels == 1], c[labels == 0]
    au = float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())
    sd = c.std()
    low, mlow = {}, {}
    for h in HACKS:
        if not all(h in lo[q] for q in qs):
            continue
        d = sum(w[q] * lo[q][h] for q in qs) - c
        low[h], mlow[h] = float((d < 0).mean()), float((d < -MARGIN * sd).mean())
    return au, low, mlow


def search(lo, labels, pool, floors, n_w=30000, max_k=6, seed=4, hacks=HACKS, must=("positive",), mins=None):
    """mins: {hack: least lower rate} constraints on hacks (in HACKS) whether or not in the objective."""
    mins = mins or {}
    rng = np.random.default_rng(seed)
    y = labels
    Xc = np.stack([lo[q]["clean"] for q in pool], 1)                     # (n, Q)
    D = np.stack([np.stack([lo[q][h] for q in pool], 1) - Xc for h in hacks])  # (H, n, Q)
    Dm = {h: np.stack([lo[q][h] for q in pool], 1) - Xc for h in mins}
    P = (Xc[y == 1][:, None, :] - Xc[y == 0][None, :, :]).reshape(-1, len(pool))
    sign = np.array([1.0 if q in YES else -1.0 for q in pool])
    best = {f: [] for f in floors}
    fixed = [pool.index(q) for q in must]
    others = [i for i in range(len(pool)) if i not in fixed]
    for k in range(max(0, 2 - len(fixed)), max_k - len(fixed) + 1):
        for sub in itertools.combinations(others, k):
            sub = [*fixed, *sub]
            W = np.zeros((n_w, len(pool)))
            W[:, sub] = rng.exponential(size=(n_w, len(sub))) * sign[sub]
            C = Xc @ W.T                                                 # (n, n_w)
            au = ((P @ W.T) > 0).mean(0)
            dd = D @ W.T                                                 # (H, n, n_w)
            lows = (dd < 0).mean(1)
            low, mean_low = lows.min(0), lows.mean(0)
            mlow = (dd < -MARGIN * C.std(0)).mean(1).min(0)
            ok = np.ones(n_w, bool)
            for h, m in mins.items():
                ok &= ((Dm[h] @ W.T) < 0).mean(0) >= m
            for f in floors:
                s = np.where((au >= f) & ok, low + 0.01 * mlow + 0.0001 * mean_low + 0.000001 * au, -1)
                j = int(np.argmax(s))
                if s[j] > 0:
                    w = W[j] / np.abs(W[j]).max()
                    best[f].append((round(float(low[j]), 3), round(float(mlow[j]), 3), round(float(au[j]), 3),
                                    {pool[i]: round(float(w[i]), 3) for i in sub},
                                    " ".join(f"{x:.2f}" for x in (dd[:, :, j] < 0).mean(1))))
    return best


if __name__ == "__main__":
    lo, labels = load()
    floors = [0.76, 0.80]
    for a in sys.argv[1:]:
        if a.startswith("--floors="):
            floors = [float(x) for x in a.split("=")[1].split(",")]
    hacks = HACKS
    for a in sys.argv[1:]:
        if a.startswith("--exclude="):
            hacks = [h for h in HACKS if h not in a.split("=")[1].split(",")]
    max_k, n_w, must, mins = 6, 30000, ("positive",), {}
    for a in sys.argv[1:]:
        if a.startswith("--max-q="):
            max_k = int(a.split("=")[1])
        if a.startswith("--n-w="):
            n_w = int(a.split("=")[1])
        if a.startswith("--must="):
            must = tuple(a.split("=")[1].split(","))
        if a.startswith("--min="):   # --min=exclaim:0.475,role_markers:0.9
            mins = {kv.split(":")[0]: float(kv.split(":")[1]) for kv in a.split("=")[1].split(",")}
    pool = [a for a in sys.argv[1:] if not a.startswith("--")]
    pool = pool[0].split(",") if pool else [q for q in lo if all(v in lo[q] for v in ["clean", *HACKS])]
    au, low, mlow = metrics(lo, labels, V3)
    print("v3 on reviews 1-40: AUROC", round(au, 3), "lower", {h: round(v, 3) for h, v in low.items()},
          "margin-lower", {h: round(v, 3) for h, v in mlow.items()})
    for q in pool:
        s = 1 if q in YES else -1
        au, low, mlow = metrics(lo, labels, {q: s})
        print(f"  {q:11s} alone ({'yes' if s > 0 else 'no'}): AUROC {au:.3f} lower",
              " ".join(f"{low.get(h, float('nan')):.2f}" for h in HACKS))
    print("pool", pool)
    best = search(lo, labels, pool, floors, n_w=n_w, max_k=max_k, hacks=hacks, must=must, mins=mins)
    print("objective over", hacks, "constraints", mins)
    for f in floors:
        print(f"== AUROC floor {f}")
        for r in sorted(best[f], key=lambda r: (-r[0], -r[1], -np.mean([float(x) for x in r[4].split()]), -r[2]))[:8]:
            print("  worst lower", r[0], "worst margin-lower", r[1], "AUROC", r[2], r[3], "| lower", r[4])
