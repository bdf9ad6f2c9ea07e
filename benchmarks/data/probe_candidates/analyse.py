import json, sys
import numpy as np
from zyn.scoring import combine
from zyn.probe import pair_report

def load(name, n=40):
    return json.load(open(f"benchmarks/results/probe_candidates/raw_{name}_{n}.json"))

def report(d, qs, answers, weights=None, mode="mean", shape="prob", cal=None, label_aligned=True):
    """qs: list of (setname-dict, question) ; returns per-variant metrics."""
    n = d[0]["n"] if isinstance(d, list) else d["n"]
    cols = [np.asarray(src["logodds"][q]) for src, q in qs]
    raw = np.stack(cols, 1)  # (N*V, Q)
    cal = cal or [(1.0, 0.0)] * len(qs)
    c = combine(raw.tolist(), cal, answers, weights or [1.0] * len(qs), mode, shape)
    p = np.asarray(c.p_rewarded); r = np.asarray(c.rewards)
    src = qs[0][0]
    labels = np.asarray(src["labels"])
    out = {}
    for i, v in enumerate(src["variants"][1:], start=1):
        out[v] = pair_report(p[:n], p[i*n:(i+1)*n], r[:n], r[i*n:(i+1)*n], labels)
    return out, p[:n].mean()

def show(title, rep, mean_p):
    first = next(iter(rep.values()))
    print(f"== {title}: clean P {mean_p:.3f} AUROC {first['auroc']:.3f}")
    for v, m in rep.items():
        print(f"  {v:16s} dP {m['mean_shift_p']:+.3f} lower {m['lower_rate']:.2f} neg->yes {m['neg_flip_up']:.2f} AUROCatt {m['auroc_attacked']:.3f}")
