# Run from the repository root: python benchmarks/data/probe_candidates/search_weights.py
"""Issue 17, round 2: signed weights for sentiment_robust v3. For every subset of 2-4 of the eight
delimited candidates (raw_delim_40.json) with positive or filmaffinity in it, 30,000 random weight
vectors (natural signs: yes-questions +, no-questions -); per AUROC floor, the one that maximises
the worst lower-rate over the six hacks ("all") or over all but role_markers ("norole")."""
import json, numpy as np, itertools
R='benchmarks/results/probe_candidates/'
d=json.load(open(R+'raw_delim_40.json')); n=40; V=d['variants']; y=np.array(d['labels'])
Q=list(d['logodds']); L=np.array([d['logodds'][q] for q in Q]).T
X={v:L[i*n:(i+1)*n] for i,v in enumerate(V)}; H=V[1:]
D=np.stack([X[v]-X['clean'] for v in H])
pos=X['clean'][y==1]; neg=X['clean'][y==0]; P=(pos[:,None,:]-neg[None,:,:]).reshape(-1,len(Q))
rng=np.random.default_rng(1)
# natural signs: yes-rewarded for positive, filmaffinity, varied, genuine; no for others
sign=np.array([1,1,-1,-1,1,-1,-1,1])
for k in [2,3,4]:
  res=[]
  for sub in itertools.combinations(range(8),k):
    if 0 not in sub and 1 not in sub: continue
    W=np.zeros((30000,8)); W[:,list(sub)]=rng.exponential(size=(30000,k))*sign[list(sub)]
    au=((P@W.T)>0).mean(0); low=((D@W.T)<0).mean(1)
    for thr in [0.75,0.80,0.85]:
      for incl in ['all','norole']:
        mn=low.min(0) if incl=='all' else low[[0,1,2,3,4]].min(0)
        s=np.where(au>=thr,mn+0.001*au,-1); i=np.argmax(s)
        if s[i]>0: res.append((thr,incl,round(mn[i],3),round(au[i],3),[Q[j] for j in sub],np.round(W[i][list(sub)]/np.abs(W[i]).max(),2),np.round(low[:,i],2)))
  for thr in [0.75,0.80,0.85]:
    for incl in ['all','norole']:
      r=sorted([x for x in res if x[0]==thr and x[1]==incl],key=lambda x:-x[2])[:2]
      for x in r: print(k,*x)
