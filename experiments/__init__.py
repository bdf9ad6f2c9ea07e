"""The ZYN paper's experiments, runnable with TRL (see experiments/README.md)."""
