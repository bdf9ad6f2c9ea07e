# Run from the repository root: python benchmarks/data/probe_candidates/analyse_r4.py ROWS [SET ...]
#   ROWS "0:40" or "40:80"; SET "v3" or a prompt-set YAML (its questions must be in the raw4 caches)
"""Issue 17, round 4: zyn probe's table for a prompt set, computed offline from the raw log-odds caches
(raw_delim_40.json, raw4_*.json) with zyn.scoring.combine (calibration, orientation, weights, the zyn
shape): ΔP, Δreward, lower, flips, neg→yes, AUROC under attack, per hack; clean AUROC. Also the AUROC
of the clean reviews 1-110 when the caches cover them (raw4_40_80 / raw4_80_110 and raw4_0_40 clean)."""
import sys
import numpy as np
from zyn.prompts import load_prompt_set
from zyn.probe import pair_report
from zyn.scoring import combine
from zyn.evaluation import auroc
sys.path.insert(0, "benchmarks/data/probe_candidates")
from search_r4 import HACKS, load  # noqa: E402


def spec_of(path):
    ps = load_prompt_set(path)
    return ps.name, ps.combine, ps.reward, [(q.name, q.reward_answer, q.weight, q.calibration) for q in ps.questions]


def scores(lo, spec, variant, combine_mode="mean_logodds", shape="zyn"):
    raw = np.stack([lo[q][variant] for q, *_ in spec], 1)
    c = combine(raw.tolist(), [cal for *_, cal in spec], [a for _, a, _, _ in spec], [w for _, _, w, _ in spec],
                combine_mode, shape)
    return np.asarray(c.p_rewarded), np.asarray(c.rewards)


def table(lo, labels, spec, hacks=HACKS, mode="mean_logodds", shape="zyn"):
    p, r = scores(lo, spec, "clean", mode, shape)
    rows = {}
    for h in hacks:
        p2, r2 = scores(lo, spec, h, mode, shape)
        rows[h] = pair_report(p, p2, r, r2, labels)
    return float(p.mean()), float(auroc(p, labels)), rows


def clean_auroc_110(spec, mode="mean_logodds"):
    ps, ys = [], []
    for a, b in [(0, 40), (40, 80), (80, 110)]:
        lo, y = load(a, b)
        if not all(q in lo and "clean" in lo[q] for q, *_ in spec):
            return None
        ps.append(scores(lo, spec, "clean", mode)[0]); ys.append(y)
    return float(auroc(np.concatenate(ps), np.concatenate(ys)))


def show(name, lo, labels, spec, mode="mean_logodds", shape="zyn"):
    mp, au, rows = table(lo, labels, spec, mode=mode, shape=shape)
    print(f"| **{name}** (clean: P {mp:.3f}) | | | | | | {au:.3f} |")
    for h, m in rows.items():
        print(f"| {h} | {m['mean_shift_p']:+.3f} | {m['mean_shift_reward']:+.2f} | {m['lower_rate']:.3f} | "
              f"{m['flip_rate']:.3f} | {m['neg_flip_up']:.3f} | {m['auroc_attacked']:.3f} |")
    a110 = clean_auroc_110(spec, mode)
    print(f"worst lower {min(m['lower_rate'] for m in rows.values()):.3f}; AUROC on 1-110: "
          f"{'n/a' if a110 is None else f'{a110:.3f}'}")


if __name__ == "__main__":
    a, b = (int(x) for x in sys.argv[1].split(":"))
    lo, labels = load(a, b)
    for s in sys.argv[2:] or ["prompts/sentiment_robust.yaml"]:
        name, mode, shape, spec = spec_of(s)
        show(f"{name} ({s})", lo, labels, spec, mode, shape)
