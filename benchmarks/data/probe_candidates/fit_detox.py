# Run from the repository root:
#   python benchmarks/data/probe_candidates/fit_detox.py SET "q1=-1,q2=0.4,..." [--scale S] [--shift-on Q]
"""Issue 17, round 3: turn signed weights from search_detox.py into detox v3's questions block.

Every question gets calibration scale S (the judge's log-odds move by hundredths to tenths; the
scale makes the combined reward span a few units) and one question a shift that puts p = 0.5
half-way between the mean toxic and the mean non-toxic text of the choice half. The in-sample
figures are recomputed through zyn.scoring.combine, i.e. exactly as the prompt set will score."""
import json, sys
import numpy as np
from zyn.scoring import combine
from search_detox import HACKS, load

SET, spec = sys.argv[1], sys.argv[2]
args = sys.argv[3:]
W = {k: float(v) for k, v in (kv.split("=") for kv in spec.split(","))}
Q, sign, X, labels, qs = load(SET)
idx = [Q.index(k) for k in W]
w = np.array([W[k] for k in W])
assert all(np.sign(w) == sign[idx]), "weights must carry the question's natural sign"
tot = np.abs(w).sum()


def raw_comb(A):  # combined oriented raw log-odds (mean_logodds, scale 1, no shift)
    return A[:, idx] @ w / tot


tc = raw_comb(X["tox:clean"])
m0 = (tc[labels == 0].mean() + tc[labels == 1].mean()) / 2
gap = tc[labels == 0].mean() - tc[labels == 1].mean()
S = float(args[args.index("--scale") + 1]) if "--scale" in args else float(np.round(4.0 / gap, 0))
k = args[args.index("--shift-on") + 1] if "--shift-on" in args else list(W)[0]
b = -S * m0 * tot / (abs(W[k]) * np.sign(W[k]))
b = float(np.round(b, 2))
print(f"raw gap between class means {gap:.4f}, centre {m0:.4f}; scale {S}, shift {b} on {k}")
cal = [(S, b if q == k else 0.0) for q in W]
ans = ["yes" if W[q] > 0 else "no" for q in W]
ws = [abs(W[q]) for q in W]


def score(A):
    c = combine(A[:, idx].tolist(), cal, ans, ws, "mean_logodds", "zyn")
    return np.array(c.p_rewarded), np.array(c.rewards)


p, r = score(X["tox:clean"])
from zyn.evaluation import auroc
print(f"choice half: AUROC {auroc(p, (labels == 0).astype(int)):.3f}; P(not toxic) non-toxic {p[labels == 0].mean():.3f}, "
      f"toxic {p[labels == 1].mean():.3f}; acc@0.5 {((p >= 0.5) == (labels == 0)).mean():.3f}")
pc, rc = score(X["cust:clean"])
print(f"customers 1-40 clean: P {pc.mean():.3f}, reward {rc.min():.2f} .. {rc.max():.2f}")
tox = X["tox:clean"][labels == 1]
pt, rt = score(tox)
for h in HACKS:
    ph, rh = score(X[f"cust:{h}"])
    pth, rth = score(X[f"toxp:{h}"])
    print(f"  {h:16s} customers: dP {np.mean(ph - pc):+.3f} lower {np.mean(rh < rc):.3f} flips {np.mean((ph >= .5) != (pc >= .5)):.3f}"
          f" | toxic: dP {np.mean(pth - pt):+.3f} lower {np.mean(rth < rt):.3f} toxic->p>=0.5 {np.mean((pt < .5) & (pth >= .5)):.3f}")
print("questions:")
for q, (s_, sh), a, wt in zip(W, cal, ans, ws):
    print(f"  - name: {q}\n    template: {json.dumps(qs[q])}\n    reward_answer: {a}\n    weight: {wt}\n"
          f"    calibration: {{scale: {s_}, shift: {sh}}}")
