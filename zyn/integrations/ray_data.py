"""Score a Ray Dataset with `map_batches`: one reward model per actor of a pool.

``ZynScorer`` is a callable class, so Ray builds it once per actor (loading the
model once) and calls it on batch after batch; its constructor arguments are plain
values (a model name, folder or URL, a prompt set name or path), so they pickle to
the actors. Each batch comes back with ``p_yes``, ``reward`` and, for a prompt set of
several questions, ``p_yes/<question>`` columns.

Example (2 actors on a local cluster)::

    import ray
    from zyn.integrations.ray_data import ZynScorer

    ray.init(num_cpus=2)
    ds = ray.data.read_parquet("corpus.parquet")
    scored = ds.map_batches(ZynScorer, fn_constructor_kwargs={"model": "/models/judge",
                            "prompt": "sentiment"}, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1,
                            batch_size=256)
    scored.write_parquet("scored/")

For GPUs pass ``num_gpus=1`` to `map_batches` (each actor sees one device). The model
may be a remote URL, or several comma-separated (`zyn.backends.remote.pool`): the
actors then only send requests.
"""
from __future__ import annotations

from typing import Any

from ..errors import InputError, ZynError
from ..records import as_input
from .shared import score_each


class ZynScorer:
    """A `Dataset.map_batches` callable adding P(yes) and reward columns (NaN for a row
    that cannot be scored, such as a null text: the rest of its batch is scored).

    Args:
        model: what `ZeroShotRewardModel` accepts as a string (hub id, folder, preset,
            ``openai+http://...`` URL or several comma-separated).
        prompt: prompt-set name, YAML path or a question.
        field: the column holding the text to judge ("text" by default; records with
            ``prompt``/``completion`` or ``messages`` columns work as in `zyn score`).
        reward, batch_size, device, dtype, **options: as for `ZeroShotRewardModel`.
    """

    def __init__(self, model: str, prompt: str = "sentiment", *, field: str = "text", reward: str | None = None,
                 batch_size: int | None = None, device: str | None = None, dtype: str | None = None,
                 **options: Any):
        from ..model import ZeroShotRewardModel

        self.field = field
        self.rm = ZeroShotRewardModel(model, prompt=prompt, reward=reward, batch_size=batch_size, device=device,
                                      dtype=dtype, **options)
        self.names = [q.name for q in self.rm.prompt_set.questions]

    def __call__(self, batch):
        """A batch (dict of numpy arrays, a pandas DataFrame or a pyarrow Table: Ray's
        batch formats) with the score columns added, in the same format."""
        import numpy as np

        arrow = hasattr(batch, "to_pydict") and hasattr(batch, "column_names")
        if arrow:
            columns = batch.to_pydict()
        elif hasattr(batch, "columns"):
            columns = {k: batch[k] for k in batch.columns}
        else:
            columns = dict(batch)
        lists = {k: _as_list(v) for k, v in columns.items()}
        n = len(next(iter(lists.values()))) if lists else 0
        records = [{k: v[i] for k, v in lists.items()} for i in range(n)]
        if n and self.field not in columns and not {"completion", "messages"} & set(columns):
            raise InputError(f"ZynScorer: the batch has no column {self.field!r} (field=), nor completion or messages; "
                             f"its columns: {', '.join(map(str, columns))}; pass field= the column holding the text")
        # a row that cannot be scored (a null text, a lone surrogate) gets NaN, not the whole batch an error
        inputs = [as_input(r, self.field) for r in records]
        rows = score_each(self.rm, inputs)
        if n and all(r is None for r in rows):  # a column of the wrong kind, not a few bad rows: say so
            try:
                self.rm.score_detailed(inputs[:1])
            except ZynError as e:
                raise InputError(f"ZynScorer: none of the batch's {n} rows could be scored; the first: {e}") from None
        nan = float("nan")
        columns["p_yes"] = np.asarray([nan if r is None else r[1] for r in rows], dtype=np.float64)
        columns["reward"] = np.asarray([nan if r is None else r[0] for r in rows], dtype=np.float64)
        if len(self.names) > 1:
            for name in self.names:
                columns[f"p_yes/{name}"] = np.asarray([nan if r is None else r[2][name] for r in rows],
                                                      dtype=np.float64)
        if arrow:
            return type(batch).from_pydict(columns)
        if hasattr(batch, "columns"):
            import pandas as pd

            return pd.DataFrame(columns)
        return columns


def _as_list(column) -> list:
    # numpy arrays of structs or lists hold Python objects; tolist() turns numbers into Python ones
    values = column.tolist() if hasattr(column, "tolist") else list(column)
    return [v.tolist() if hasattr(v, "tolist") else v for v in values]
