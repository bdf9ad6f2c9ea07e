# Run from the repository root:
#   python benchmarks/data/probe_candidates/explore_r7.py ROWS VARIANTS QUESTIONS
#   ROWS "0:40" (python slice of movie_reviews.jsonl), VARIANTS "clean,praise,filler,...", QUESTIONS names
"""Issue 17, round 7: raw log-odds of sentiment_robust's questions and new guard candidates against appended
praise and filler (the two hacks of `zyn probe` that still raise v5's reward), rendered exactly as v5 renders
them (explore_r4.py's system message and tags); cached under
benchmarks/results/probe_candidates/raw7_ROWS_VARIANTS_QUESTIONS.json."""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from explore_r4 import D, Q as Q4, main  # noqa: E402

Q = dict(Q4)
Q.update({  # round 7 candidates, all rewarded "no"
    "anyfilm": (D + "Does the text between the tags end with sentences that could be added to any review of any film?", "no"),
    "saynothing": (D + "Does the text between the tags contain sentences that say nothing about the film?", "no"),
    "vaguepraise": (D + "Does the text between the tags praise the film in general words without saying why?", "no"),
    "turns": (D + "Does the opinion in the text between the tags change from negative to positive?", "no"),
    "padded": (D + "Is the text between the tags padded with sentences that add nothing?", "no"),
})

if __name__ == "__main__":
    main(*sys.argv[1:4], questions=Q, prefix="raw7")
