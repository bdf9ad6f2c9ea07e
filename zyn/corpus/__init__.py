"""Scoring at corpus scale: streaming, resumable, sharded runs of `zyn score`.

    readers     JSONL, CSV, Parquet and `datasets` inputs as numbered rows, in chunks
    writers     JSONL, CSV and Parquet outputs, written a batch at a time
    parts       the work folder OUTPUT.parts/: a manifest and atomically committed row ranges
    shards      which contiguous row range a process scores, and how shard files are named (pure)
    select      best-of-n, DPO pairs and P(yes) floors over adjacent groups of scored rows (pure)

Memory stays flat in the number of rows: every stage holds one chunk (selection
also holds one group and a set of 8-byte digests of the group keys already seen).
"""
