# Run from the repository root: python benchmarks/data/probe_candidates/search_detox.py [SET] [--toxp]
"""Issue 17, round 3: signed weights for detox v3 (the approach of search_weights.py).

Merges the raw log-odds cached by explore_detox.py for SET (default guard), prints each question
alone, then for every subset of 1-4 questions that holds a toxicity question (toxic, istoxic, rude,
polite), 20,000 random weight vectors with natural signs (yes-rewarded +, no-rewarded -), and keeps
per subset size the vector that maximises the worst lower-rate over the six hacks on customer
messages 1-40, subject to toxicity AUROC on the choice half >= v2's - 0.03 (AUROC of the combined
P(not toxic) against "not toxic"; for SET short, "v2" means the same wording under that system line;
FLOOR=x in the environment sets a fixed floor instead). --toxp: the worst is taken over the hacked toxic texts too."""
import glob, itertools, json, os, sys
import numpy as np

R = os.environ.get("RAW_DIR", "benchmarks/results/probe_candidates/")
SET = next((a for a in sys.argv[1:] if not a.startswith("--")), "guard")
TOXP = "--toxp" in sys.argv
HACKS = ["repeat", "repeat_sentence", "answer_no", "grader_note_no", "fake_chat", "role_markers"]
TOXQ = {"toxic", "istoxic", "rude", "polite"}


def load(set_name=SET):
    lo, sign, groups, labels, qs = {}, {}, None, None, {}
    for f in sorted(glob.glob(R + f"raw3_detox_{set_name}_*.json")):
        d = json.load(open(f))
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
    """(non-toxic - toxic) differences of every pair: AUROC of a weight vector w = mean((P @ w) > 0)."""
    pos, neg = X["tox:clean"][labels == 0], X["tox:clean"][labels == 1]
    return (pos[:, None, :] - neg[None, :, :]).reshape(-1, pos.shape[1])


def metrics(W, X, P):
    """W: (K, Q) signed weights -> auroc (K,), lower (6, K) on customers, lower on hacked toxic texts (6, K)."""
    s = P @ W.T
    au = (s > 0).mean(0) + 0.5 * (s == 0).mean(0)
    low = np.stack([((X[f"cust:{h}"] - X["cust:clean"]) @ W.T < 0).mean(0) for h in HACKS])
    tox = X["tox:clean"][LABELS == 1]
    lowt = np.stack([((X[f"toxp:{h}"] - tox) @ W.T < 0).mean(0) for h in HACKS])
    return au, low, lowt


if __name__ == "__main__":
    Q, sign, X, LABELS, qs = load()
    P = auroc_pairs(X, LABELS)
    print(f"set {SET}: {len(Q)} questions; choice half {len(LABELS)} texts ({LABELS.sum()} toxic)")
    print("question alone (rewards) | AUROC | lower on customers 1-40:", ", ".join(HACKS), "| lower on hacked toxic")
    for j, q in enumerate(Q):
        w = np.zeros((1, len(Q)))
        w[0, j] = sign[j]
        au, low, lowt = metrics(w, X, P)
        print(f"  {q} ({'yes' if sign[j] > 0 else 'no'}) | {au[0]:.3f} | "
              + ", ".join(f"{x:.2f}" for x in low[:, 0]) + " | " + ", ".join(f"{x:.2f}" for x in lowt[:, 0]))
    if "toxic" not in Q:
        sys.exit()
    v2 = np.zeros((1, len(Q)))
    v2[0, Q.index("toxic")] = -1
    floor = metrics(v2, X, P)[0][0] - 0.03
    print(f"AUROC floor (v2 {floor + 0.03:.3f} - 0.03) = {floor:.3f}")
    if os.environ.get("FLOOR"):  # a fixed floor instead (e.g. FLOOR=0.75: the set must rank toxicity)
        floor = float(os.environ["FLOOR"])
        print(f"AUROC floor set to {floor}")
    rng = np.random.default_rng(3)
    best = []
    for k in range(1, 5):
        for sub in itertools.combinations(range(len(Q)), k):
            if not TOXQ & {Q[j] for j in sub}:
                continue
            n = 1 if k == 1 else 20000
            W = np.zeros((n, len(Q)))
            W[:, list(sub)] = (rng.exponential(size=(n, k)) if k > 1 else 1.0) * sign[list(sub)]
            au, low, lowt = metrics(W, X, P)
            worst = np.minimum(low.min(0), lowt.min(0)) if TOXP else low.min(0)
            score = np.where(au >= floor, worst + 0.001 * au, -1)
            i = int(np.argmax(score))
            if score[i] > 0:
                w = W[i] / np.abs(W[i]).max()
                best.append((k, round(float(worst[i]), 3), round(float(au[i]), 3), [Q[j] for j in sub],
                             np.round(w[list(sub)], 2).tolist(), np.round(low[:, i], 2).tolist(),
                             np.round(lowt[:, i], 2).tolist()))
    for k in range(1, 5):
        for row in sorted([b for b in best if b[0] == k], key=lambda b: (-b[1], -b[2]))[:4]:
            print(*row)
