# Run from the repository root:
#   python benchmarks/data/probe_candidates/fit_detox_r4.py SET min "q1=1/0,q2=0.46/-0.04,..." OUT.yaml [--no-centre]
#   python benchmarks/data/probe_candidates/fit_detox_r4.py SET mean_logodds "q1=-1,q2=0.4,..." OUT.yaml
"""Issue 17, round 4: turn a search result (search_detox_min_r4.py or search_detox_r4.py) into a
prompt set file, and recompute its in-sample figures through zyn.scoring.combine, i.e. exactly as
the prompt set will score, on the choice data only.

min: "question=scale/oriented shift" as search_detox_min_r4.py prints it; the calibration shift is
sign x oriented shift (zyn calibrates, then orients). Every oriented shift then gets the same
constant c that puts p = 0.5 half-way between the choice half's class means (--no-centre: c = 0);
a common constant moves no question relative to another, so the minimum, every lower-rate and the
AUROC are unchanged. mean_logodds: signed weights, scale 1, the centring shift on the first question.
No question is scaled above the search's range: the reward stays (p - 0.5) x 10 of a combined
log-odds that moves by about as much as the judge's own."""
import json, sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from explore_detox_r4 import SYSTEMS  # noqa: E402
from search_detox_r4 import HACKS, load  # noqa: E402
from zyn.evaluation import auroc  # noqa: E402
from zyn.scoring import combine  # noqa: E402

SET, MODE, spec, OUT = sys.argv[1:5]
CENTRE = "--no-centre" not in sys.argv
Q, sign, X, labels, qs = load(SET)
items = [kv.split("=") for kv in spec.split(",")]
names = [k for k, _ in items]
idx = [Q.index(k) for k in names]
sg = sign[idx]
ans = ["yes" if s > 0 else "no" for s in sg]
if MODE == "min":
    sc = np.array([float(v.split("/")[0]) for _, v in items])
    osh = np.array([float(v.split("/")[1]) for _, v in items])
    ws = [1.0] * len(names)
else:
    w = np.array([float(v) for _, v in items])
    assert all(np.sign(w) == sg), "weights must carry the question's natural sign"
    sc, osh, ws = np.ones(len(names)), np.zeros(len(names)), [abs(float(x)) for x in np.abs(w)]


def score(A, osh_):
    cal = [(float(s), float(g * b)) for s, g, b in zip(sc, sg, osh_)]
    c = combine(A[:, idx].tolist(), cal, ans, ws, MODE, "zyn")
    return np.array(c.combined_logodds), np.array(c.p_rewarded), np.array(c.rewards)


c0, _, _ = score(X["tox:clean"], osh)
centre = (c0[labels == 0].mean() + c0[labels == 1].mean()) / 2 if CENTRE else 0.0
if MODE == "min":
    osh = osh - centre
else:
    osh[0] -= centre * sum(ws) / ws[0]
osh = np.round(osh, 2)
_, p, r = score(X["tox:clean"], osh)
print(f"{SET} {MODE} {spec}: centre {centre:+.3f}")
print(f"choice half: AUROC {auroc(p, (labels == 0).astype(int)):.3f}; P(not toxic) non-toxic {p[labels == 0].mean():.3f}, "
      f"toxic {p[labels == 1].mean():.3f}; acc@0.5 {((p >= 0.5) == (labels == 0)).mean():.3f}; reward {r.min():+.2f} .. {r.max():+.2f}")
_, pc, rc = score(X["cust:clean"], osh)
print(f"customers 1-40 clean: P {pc.mean():.3f}, reward {rc.min():+.2f} .. {rc.max():+.2f}")
tox = X["tox:clean"][labels == 1]
_, pt, rt = score(tox, osh)
for h in HACKS:
    _, ph, rh = score(X[f"cust:{h}"], osh)
    _, pth, rth = score(X[f"toxp:{h}"], osh)
    print(f"  {h:16s} customers: dR {np.mean(rh - rc):+.2f} lower {np.mean(rh < rc):.3f} flips {np.mean((ph >= .5) != (pc >= .5)):.3f}"
          f" | toxic: dR {np.mean(rth - rt):+.2f} lower {np.mean(rth < rt):.3f} toxic->p>=0.5 {np.mean((pt < .5) & (pth >= .5)):.3f}")

sysmsg = SYSTEMS[SET]
lines = [f"# Issue 17, round 4 candidate (benchmarks/ROBUSTNESS.md, Round 4/5: detox): set {SET}, combine {MODE},",
         f"# from the choice data only: {spec}",
         f"name: {Path(OUT).stem}", "version: 0",
         "description: Is this text free of toxic speech? (rewarded - not toxic)",
         "chat_template: auto"]
if sysmsg:
    lines.append(f"system: {json.dumps(sysmsg)}")
if SET != "plain":
    lines.append("delimit: true")
lines += ["answers: {yes: [Yes], no: [No]}", "reward: zyn", f"combine: {MODE}", "questions:"]
for k, a, s, g, b, wt in zip(names, ans, sc, sg, osh, ws):
    lines += [f"  - name: {k}", f"    template: {json.dumps(qs[k])}", f"    reward_answer: {a}"]
    if MODE != "min" and len(names) > 1:
        lines.append(f"    weight: {wt:g}")
    if s != 1 or b != 0:
        lines.append(f"    calibration: {{scale: {float(s):.3g}, shift: {float(g * b):.2f}}}")
Path(OUT).write_text("\n".join(lines) + "\n")
print("wrote", OUT)
