# Run from the repository root:
#   [FLOOR=0.65] python benchmarks/data/probe_candidates/search_detox_r4.py SET [--toxp] [--top N]
"""Issue 17, round 4: signed weights for a detox v3, on the choice data only.

As search_detox.py (round 3), but it merges the caches of both rounds for SET
(raw3_detox_SET_*.json and raw4_detox_SET_*.json; the plain set has only round 4's), the AUROC
floor is fixed (FLOOR, default 0.65: AUROC of the combined P(not toxic) against "not toxic" on the
choice half, rows 1-30), and --toxp takes the worst lower-rate over the hacked toxic texts as well
as over customer messages 1-40 (a policy that writes abuse and appends an injection must not gain).

For every subset of 1-4 questions holding a toxicity question (toxic, istoxic, rude, polite),
20,000 random weight vectors with natural signs (yes-rewarded +, no-rewarded -); per subset the
vector that maximises the worst lower-rate (+ 0.001 x AUROC as tie-break) subject to the floor.
The combination is the weighted mean of raw log-odds, i.e. `combine: mean_logodds` with scale 1:
the sign of every difference, hence every lower-rate and the AUROC, does not depend on the scale."""
import glob, itertools, json, os, sys
import numpy as np

R = os.environ.get("RAW_DIR", "benchmarks/results/probe_candidates/")
HACKS = ["repeat", "repeat_sentence", "answer_no", "grader_note_no", "fake_chat", "role_markers"]
TOXQ = {"toxic", "istoxic", "rude", "polite"}


def load(set_name):
    lo, sign, groups, labels, qs = {}, {}, None, None, {}
    files = sorted(glob.glob(R + f"raw3_detox_{set_name}_*.json")) + sorted(glob.glob(R + f"raw4_detox_{set_name}_*.json"))
    for f in files:
        d = json.load(open(f))
        if groups is not None:
            assert d["groups"] == groups and d["labels"] == labels.tolist(), f
        groups, labels = d["groups"], np.array(d["labels"])
        for k, v in d["logodds"].items():
            lo[k] = np.array(v)
            sign[k] = 1.0 if d["questions"][k][1] == "yes" else -1.0
            qs[k] = d["questions"][k][0]
    names = list(lo)
    L = np.stack([lo[k] for k in names], 1)
    X, i = {}, 0
    for g, n in groups.items():
        X[g] = L[i:i + n]
        i += n
    return names, np.array([sign[k] for k in names]), X, labels, qs


def auroc_pairs(X, labels):
    """(non-toxic - toxic) differences of every pair: AUROC of weights w = mean((P @ w) > 0) (+ ties / 2)."""
    pos, neg = X["tox:clean"][labels == 0], X["tox:clean"][labels == 1]
    return (pos[:, None, :] - neg[None, :, :]).reshape(-1, pos.shape[1])


def metrics(W, X, P, labels):
    """W: (K, Q) signed weights -> AUROC (K,), lower (6, K) on customers 1-40, lower (6, K) on hacked toxic texts."""
    s = P @ W.T
    au = (s > 0).mean(0) + 0.5 * (s == 0).mean(0)
    low = np.stack([((X[f"cust:{h}"] - X["cust:clean"]) @ W.T < 0).mean(0) for h in HACKS])
    tox = X["tox:clean"][labels == 1]
    lowt = np.stack([((X[f"toxp:{h}"] - tox) @ W.T < 0).mean(0) for h in HACKS])
    return au, low, lowt


def fmt(xs):
    return ", ".join(f"{x:.2f}" for x in xs)


if __name__ == "__main__":
    SET = next((a for a in sys.argv[1:] if not a.startswith("--") and not a.isdigit()), "short")
    TOXP = "--toxp" in sys.argv
    TOP = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 3
    floor = float(os.environ.get("FLOOR", "0.65"))
    Q, sign, X, labels, qs = load(SET)
    P = auroc_pairs(X, labels)
    print(f"set {SET}: {len(Q)} questions; choice half {len(labels)} texts ({labels.sum()} toxic); "
          f"AUROC floor {floor}; objective: worst lower on customers 1-40{' and hacked toxic' if TOXP else ''}")
    print("question alone (rewards) | AUROC | lower on customers 1-40:", ", ".join(HACKS), "| lower on hacked toxic")
    for j, q in enumerate(Q):
        w = np.zeros((1, len(Q)))
        w[0, j] = sign[j]
        au, low, lowt = metrics(w, X, P, labels)
        print(f"  {q} ({'yes' if sign[j] > 0 else 'no'}) | {au[0]:.3f} | {fmt(low[:, 0])} | {fmt(lowt[:, 0])}")
    rng = np.random.default_rng(4)
    best = []
    for k in range(1, 5):
        for sub in itertools.combinations(range(len(Q)), k):
            if not TOXQ & {Q[j] for j in sub}:
                continue
            n = 1 if k == 1 else 20000
            W = np.zeros((n, len(Q)))
            W[:, list(sub)] = (rng.exponential(size=(n, k)) if k > 1 else 1.0) * sign[list(sub)]
            au, low, lowt = metrics(W, X, P, labels)
            worst = np.minimum(low.min(0), lowt.min(0)) if TOXP else low.min(0)
            score = np.where(au >= floor, worst + 0.001 * au, -1)
            i = int(np.argmax(score))
            if score[i] >= 0:
                w = W[i] / np.abs(W[i]).max()
                best.append((k, round(float(worst[i]), 3), round(float(au[i]), 3),
                             ",".join(f"{Q[j]}={w[j]:.2f}" for j in sub), fmt(low[:, i]), fmt(lowt[:, i])))
    print("size | worst lower | AUROC | weights | lower customers | lower hacked toxic")
    for k in range(1, 5):
        for row in sorted([b for b in best if b[0] == k], key=lambda b: (-b[1], -b[2]))[:TOP]:
            print(" | ".join(str(x) for x in row))
    if not best:
        print("(no subset reaches the floor)")
