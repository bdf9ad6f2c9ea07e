# Run from the repository root: python benchmarks/data/probe_candidates/frontier_r7.py
"""Issue 17, round 7: the price of defending appended praise and filler on the default judge. With v5's penalty
(search_r7.py), the best in-sample AUROC (reviews 1-40) of a weighted mean of log-odds whose round-4 hacks all
stay >= 0.9 and whose praise and filler lower-rates are >= F, for F from 0 to 0.9 (30,000 draws per subset)."""
import itertools, sys
import numpy as np
sys.path.insert(0, "benchmarks/data/probe_candidates")
from search_r7 import HACKS, V, YES, load, rates  # noqa: E402

lo, y = load(0, 40)
rt = rates(0, 40)
pool = [q for q in lo if all(h in lo[q] for h in ["clean"] + HACKS)]
others = [q for q in pool if q != "positive"]
rng = np.random.default_rng(7)
floors = [0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9]
best = {f: (-1.0, None) for f in floors}
for k in range(0, 5):
    for sub in itertools.combinations(others, k):
        qs = ("positive",) + sub
        sign = np.array([1.0 if q in YES else -1.0 for q in qs])
        W = rng.dirichlet(np.ones(len(qs)), size=3000) * sign
        C = {h: np.stack([lo[q][h] for q in qs], 1) @ W.T - V * rt[h][:, None] for h in ["clean"] + HACKS}
        low = {h: (C[h] < C["clean"]).mean(0) for h in HACKS}
        base = np.min([low[h] for h in HACKS[:8]], 0) >= 0.9
        pf = np.minimum(low["praise"], low["filler"])
        pos, neg = C["clean"][y == 1], C["clean"][y == 0]
        au = (pos[:, None, :] > neg[None, :, :]).mean((0, 1))
        for f in floors:
            ok = base & (pf >= f)
            if ok.any():
                j = int(np.argmax(np.where(ok, au, -1)))
                if au[j] > best[f][0]:
                    best[f] = (float(au[j]), dict(zip(qs, np.round(W[j], 3).tolist())), float(pf[j]))
for f in floors:
    au, w, pf = best[f]
    print(f"praise and filler >= {f:.1f}: best AUROC {au:.3f} (praise/filler min {pf:.2f}) {w}")
