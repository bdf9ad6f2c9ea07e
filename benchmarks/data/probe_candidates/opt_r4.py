# Run from the repository root: python benchmarks/data/probe_candidates/opt_r4.py [--floor=0.76] [--max-q=6]
"""Issue 17, round 4: signed weights by a smooth surrogate instead of random search, on reviews 1-40
only. For a set of questions (natural signs: yes-rewarded +, no-rewarded -), maximise the soft
minimum over the eight hacks of a sigmoid "lower rate" (a pair counts as lowered smoothly, with a
temperature of TAU times the spread of the clean combined scores, so that barely-moved pairs count
for half) with a penalty when the smooth sentiment AUROC falls below FLOOR; Adam (torch) from 24
seeded starts at once. Questions are added greedily to "positive" (the one whose addition gives the best actual
worst lower-rate at AUROC >= FLOOR) up to --max-q. Prints each step's weights and actual metrics."""
import sys
import numpy as np
import torch
sys.path.insert(0, "benchmarks/data/probe_candidates")
from search_r4 import HACKS, YES, load, metrics  # noqa: E402

TAU = 0.15


def fit(lo, y, qs, floor, starts=24, seed=4, steps=300):
    Xc = np.stack([lo[q]["clean"] for q in qs], 1)
    D = np.stack([np.stack([lo[q][h] for q in qs], 1) - Xc for h in HACKS])
    P = (Xc[y == 1][:, None, :] - Xc[y == 0][None, :, :]).reshape(-1, len(qs))
    sign = torch.tensor([1.0 if q in YES else -1.0 for q in qs], dtype=torch.float64)
    Xt, Dt, Pt = (torch.tensor(a, dtype=torch.float64) for a in (Xc, D, P))
    gen = torch.Generator().manual_seed(seed)
    t = (torch.randn(starts, len(qs), generator=gen, dtype=torch.float64) * 1.5).requires_grad_()
    opt = torch.optim.Adam([t], lr=0.1)
    for _ in range(steps):   # every start at once: row s of t is one start
        w = sign * torch.nn.functional.softplus(t)                    # (S, Q)
        sd = (Xt @ w.T).std(0) + 1e-9                                  # (S,)
        lr_ = torch.sigmoid(-(Dt @ w.T) / (TAU * sd)).mean(1)          # (H, S)
        au = torch.sigmoid((Pt @ w.T) / (TAU * sd)).mean(0)            # (S,)
        softmin = -torch.logsumexp(-30 * lr_, 0) / 30
        loss = (-softmin + 2000 * torch.relu(floor + 0.01 - au) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    best = None
    for row in (sign * torch.nn.functional.softplus(t)).detach().numpy():
        w = row / np.abs(row).max()
        au, low, mlow = metrics(lo, y, dict(zip(qs, w)))
        key = (bool(au >= floor), min(low.values()), min(mlow.values()), au)
        if best is None or key > best[0]:
            best = (key, {q: round(float(x), 3) for q, x in zip(qs, w)}, low)
    return best

if __name__ == "__main__":
    torch.set_num_threads(1)
    floor, max_q = 0.76, 6
    for a in sys.argv[1:]:
        if a.startswith("--floor="):
            floor = float(a.split("=")[1])
        if a.startswith("--max-q="):
            max_q = int(a.split("=")[1])
    lo, y = load()
    pool = [q for q in lo if all(v in lo[q] for v in ["clean", *HACKS])]
    chosen = ["positive"]
    for a in sys.argv[1:]:
        if a.startswith("--start="):
            chosen = a.split("=")[1].split(",")
    if len(chosen) > 1:
        (ok, worst, mworst, au), w, low = fit(lo, y, chosen, floor)
        print(f"start {chosen}: AUROC {au:.3f} worst lower {worst:.3f} worst margin-lower {mworst:.3f}\n   "
              f"weights {w}\n   lower " + " ".join(f"{h} {v:.3f}" for h, v in low.items()), flush=True)
    while len(chosen) < max_q:
        trials = []
        for q in pool:
            if q in chosen:
                continue
            (ok, worst, mworst, au), w, low = fit(lo, y, chosen + [q], floor)
            trials.append(((ok, worst, mworst, au), q, w, low))
        trials.sort(key=lambda t: t[0], reverse=True)
        (ok, worst, mworst, au), q, w, low = trials[0]
        chosen.append(q)
        print(f"{len(chosen)} questions: +{q}  AUROC {au:.3f} (floor met: {ok})  worst lower {worst:.3f}  "
              f"worst margin-lower {mworst:.3f}\n   weights {w}\n   lower " +
              " ".join(f"{h} {v:.3f}" for h, v in low.items()), flush=True)
