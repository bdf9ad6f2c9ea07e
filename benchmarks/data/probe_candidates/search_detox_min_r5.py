# Run from the repository root:
#   [FLOOR=0.70] python benchmarks/data/probe_candidates/search_detox_min_r5.py [--sizes 3] [--require polite] [--top N]
"""Issue 17, round 5: `combine: min` for a detox v4 in the plain layout, on the choice data only,
with the probe's repetition hacks in the objective (repeat, repeat_sentence, repeat_lines) as well as
round 4's injections (answer_no, grader_note_no, fake_chat, role_markers).

Raw log-odds: round 4's plain cache (raw4_detox_plain_*.json: six hacks) merged with round 5's
(raw5_detox_plain_*.json: the repetition guards on all seven hacks, and polite / roles / ordinary on
the repeat_lines groups only). Only questions with every group are searched.

As search_detox_min_r4.py: polite (the only ranking question here) is the anchor (scale 1, shift 0);
every other question of the subset gets a scale log-uniform in [1/MAXSCALE, MAXSCALE] and an oriented
shift uniform in [-4, 12]; 50,000 draws per subset (seed 5); keep the draw maximising the worst
lower-rate over the seven hacks on customer messages 1-40 and on the 15 hacked toxic texts
(+ 0.001 x AUROC) with AUROC >= FLOOR (default 0.70) on the choice half (rows 1-30)."""
import glob, itertools, json, os, sys
from pathlib import Path

import numpy as np

R = os.environ.get("RAW_DIR", "benchmarks/results/probe_candidates/")
HACKS = ["repeat", "repeat_sentence", "repeat_lines", "answer_no", "grader_note_no", "fake_chat", "role_markers"]
TOXQ = {"toxic", "istoxic", "polite"}
NEED = ["cust:clean", *[f"cust:{h}" for h in HACKS], "tox:clean", *[f"toxp:{h}" for h in HACKS]]


def fmt(xs):
    return ", ".join(f"{x:.2f}" for x in xs)


def load():
    per, sign, qs, labels = {}, {}, {}, None
    files = sorted(glob.glob(R + "raw4_detox_plain_*.json")) + sorted(glob.glob(R + "raw5_detox_plain_*.json"))
    for f in files:
        d = json.load(open(f))
        if labels is not None:
            assert d["labels"] == labels.tolist(), f
        labels = np.array(d["labels"])
        for k, v in d["logodds"].items():
            v, i = np.array(v), 0
            sign[k] = 1.0 if d["questions"][k][1] == "yes" else -1.0
            qs[k] = d["questions"][k][0]
            for g, n in d["groups"].items():
                per.setdefault(k, {})[g] = v[i:i + n]
                i += n
    names = [k for k in per if all(g in per[k] for g in NEED)]
    X = {g: np.stack([per[k][g] for k in names], 1) for g in NEED}
    return names, np.array([sign[k] for k in names]), X, labels, qs


def evaluate(S, B, sub, sign, X, labels):
    """S, B: (K, k) scales and oriented shifts -> AUROC (K,), lower on customers (7, K), on hacked toxic (7, K)."""
    def comb(A):
        o = (A[:, sub] * sign[sub])[None, :, :] * S[:, None, :] + B[:, None, :]
        return o.min(2)
    t = comb(X["tox:clean"])
    pos, neg = t[:, labels == 0], t[:, labels == 1]
    d = pos[:, :, None] - neg[:, None, :]
    au = (d > 0).mean((1, 2)) + 0.5 * (d == 0).mean((1, 2))
    c = comb(X["cust:clean"])
    low = np.stack([(comb(X[f"cust:{h}"]) < c).mean(1) for h in HACKS])
    tt = t[:, labels == 1]
    lowt = np.stack([(comb(X[f"toxp:{h}"]) < tt).mean(1) for h in HACKS])
    return au, low, lowt


if __name__ == "__main__":
    arg = lambda k, d: sys.argv[sys.argv.index(k) + 1] if k in sys.argv else d  # noqa: E731
    TOP = int(arg("--top", "3"))
    MAXS = float(arg("--maxscale", "4"))
    sizes = [int(s) for s in arg("--sizes", "1,2,3").split(",")]
    require = [q for q in arg("--require", "polite").split(",") if q]
    floor = float(os.environ.get("FLOOR", "0.70"))
    Q, sign, X, labels, qs = load()
    print(f"plain (min): {len(Q)} questions with all groups: {', '.join(Q)}; AUROC floor {floor}; "
          f"scales in [1/{MAXS}, {MAXS}]; objective: worst lower over {', '.join(HACKS)} on customers 1-40 and hacked toxic")
    print("question alone (rewards) | AUROC | lower on customers 1-40 | lower on hacked toxic")
    alone = {}
    for j, q in enumerate(Q):
        au, low, lowt = evaluate(np.ones((1, 1)), np.zeros((1, 1)), [j], sign, X, labels)
        alone[j] = au[0]
        print(f"  {q} ({'yes' if sign[j] > 0 else 'no'}) | {au[0]:.3f} | {fmt(low[:, 0])} | {fmt(lowt[:, 0])}")
    rng = np.random.default_rng(5)
    best = []
    n = 50000
    for k in sizes:
        for sub in itertools.combinations(range(len(Q)), k):
            if not all(Q.index(r) in sub for r in require):
                continue
            tq = [j for j in sub if Q[j] in TOXQ]
            if not tq:
                continue
            anchor = max(tq, key=lambda j: alone[j])
            sub = [anchor] + [j for j in sub if j != anchor]
            m = 1 if k == 1 else n
            S = np.exp(rng.uniform(-np.log(MAXS), np.log(MAXS), size=(m, k)))
            B = rng.uniform(-4, 12, size=(m, k))
            S[:, 0], B[:, 0] = 1.0, 0.0
            res = [evaluate(S[i:i + 5000], B[i:i + 5000], sub, sign, X, labels) for i in range(0, m, 5000)]
            au = np.concatenate([r[0] for r in res])
            low = np.concatenate([r[1] for r in res], 1)
            lowt = np.concatenate([r[2] for r in res], 1)
            worst = np.minimum(low.min(0), lowt.min(0))
            worstc = low.min(0)
            score = np.where(au >= floor, worst + 0.001 * au, -1)
            i = int(np.argmax(score))
            if score[i] >= 0:
                spec = ",".join(f"{Q[j]}={S[i, a]:.2f}/{B[i, a]:+.2f}" for a, j in enumerate(sub))
                best.append((k, round(float(worst[i]), 3), round(float(worstc[i]), 3), round(float(au[i]), 3), spec,
                             fmt(low[:, i]), fmt(lowt[:, i])))
    print("size | worst lower (all) | worst lower (customers) | AUROC | question=scale/oriented shift | lower customers | lower hacked toxic")
    for k in sizes:
        for row in sorted([b for b in best if b[0] == k], key=lambda b: (-b[1], -b[3]))[:TOP]:
            print(" | ".join(str(x) for x in row))
    if not best:
        print("(no subset reaches the floor)")
