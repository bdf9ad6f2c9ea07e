import sys; sys.path.insert(0, "benchmarks/data/probe_candidates")
from analyse import *
d=load('delim')
H=['repeat','repeat_sentence','grader_note','answer_yes','fake_chat','role_markers']
cands={
 'v2: film+rep+instr': (['filmaffinity','repetitive','instructs'],['yes','no','no']),
 'paired rep: film+rep+varied+instr': (['filmaffinity','repetitive','varied','instructs'],['yes','no','yes','no']),
 'paired both: film+rep+varied+instr+genuine': (['filmaffinity','repetitive','varied','instructs','genuine'],['yes','no','yes','no','yes']),
 'film+repeats+varied+instr+genuine': (['filmaffinity','repeats','varied','instructs','genuine'],['yes','no','yes','no','yes']),
}
for t,(qs,ans) in cands.items():
  for mode in ['mean_logodds','mean','min']:
    rep,mp=report(d,[(d,q) for q in qs],ans,mode=mode)
    print(f"{t:45s} {mode:12s} AUROC {rep['repeat']['auroc']:.3f} lower", [round(rep[h]['lower_rate'],2) for h in H])
