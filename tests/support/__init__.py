"""Test helpers that are not fixtures: servers to score against (a stand-in vLLM, llama.cpp's)."""
