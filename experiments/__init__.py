"""The ZYN paper's experiments, runnable with TRL (see README.md, "Experiments")."""
