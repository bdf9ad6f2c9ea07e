# Run from the repository root:
#   [FLOOR=0.65] python benchmarks/data/probe_candidates/search_detox_min_r4.py SET [--top N] [--maxscale S]
"""Issue 17, round 4: `combine: min` for a detox v3, on the choice data only (hacked toxic texts
in the objective, as search_detox_r4.py --toxp).

With `min` the reward is the least satisfied question: o_j = orient(scale_j * raw_j + shift_j),
reward from min_j o_j. A guard ("Is the text ... repetitive?", rewarded "no") can then sit above
the toxicity question on ordinary text (a large shift) and take over only when a hack moves it;
unlike a weighted mean it does not have to blur the toxicity question's ranking to do so.

Per subset of 1-4 questions holding a toxicity question: the toxicity question with the best
AUROC alone in the subset is the anchor (scale 1, shift 0); every other question gets a scale
log-uniform in [1/MAXSCALE, MAXSCALE] (default 4) and an oriented shift uniform in [-4, 12];
50,000 draws; keep the draw maximising the worst lower-rate over the six hacks on customer
messages 1-40 and on the hacked toxic texts (+ 0.001 x AUROC) with AUROC >= FLOOR on the choice half."""
import itertools, os, sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from search_detox_r4 import HACKS, TOXQ, fmt, load  # noqa: E402


def evaluate(S, B, sub, sign, X, labels):
    """S, B: (K, k) scales and oriented shifts -> AUROC (K,), lower on customers (6, K), on hacked toxic (6, K)."""
    def comb(A):  # (N, Q) raw -> (K, N) min over the subset of oriented calibrated log-odds
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
    SET = next((a for a in sys.argv[1:] if not a.startswith("--") and not a.replace(".", "").isdigit()), "short")
    TOP = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 3
    MAXS = float(sys.argv[sys.argv.index("--maxscale") + 1]) if "--maxscale" in sys.argv else 4.0
    floor = float(os.environ.get("FLOOR", "0.65"))
    Q, sign, X, labels, qs = load(SET)
    print(f"set {SET} (min): {len(Q)} questions; AUROC floor {floor}; scales in [1/{MAXS}, {MAXS}]; "
          "objective: worst lower on customers 1-40 and hacked toxic")
    alone = {}
    for j in range(len(Q)):
        au, _, _ = evaluate(np.ones((1, 1)), np.zeros((1, 1)), [j], sign, X, labels)
        alone[j] = au[0]
    rng = np.random.default_rng(5)
    best = []
    n = 50000
    for k in range(1, 5):
        for sub in itertools.combinations(range(len(Q)), k):
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
            score = np.where(au >= floor, worst + 0.001 * au, -1)
            i = int(np.argmax(score))
            if score[i] >= 0:
                spec = ",".join(f"{Q[j]}={S[i, a]:.2f}/{B[i, a]:+.2f}" for a, j in enumerate(sub))
                best.append((k, round(float(worst[i]), 3), round(float(au[i]), 3), spec, fmt(low[:, i]), fmt(lowt[:, i])))
    print("size | worst lower | AUROC | question=scale/oriented shift | lower customers | lower hacked toxic")
    for k in range(1, 5):
        for row in sorted([b for b in best if b[0] == k], key=lambda b: (-b[1], -b[2]))[:TOP]:
            print(" | ".join(str(x) for x in row))
    if not best:
        print("(no subset reaches the floor)")
