"""A stand-in vLLM server for tests: vLLM's /tokenize, /generative_scoring and /v1/models
over a transformers model, and nothing else (any other path is FastAPI's 404).

Written from vLLM's published protocol, as read in its source (vllm-project/vllm):

* ``vllm/entrypoints/generate/generative_scoring/api_router.py``: ``POST /generative_scoring``
  at the server root.
* ``vllm/entrypoints/generate/generative_scoring/serving.py``: ``GenerativeScoringRequest``
  (model, query, items, label_token_ids, apply_softmax=True, item_first=False,
  add_special_tokens=True); ``_build_prompts`` (a text query tokenized with
  add_special_tokens, text items without; prompt = query + item, or item + query;
  cut to max_model_len - 1 keeping the head); ``_compute_probabilities`` (softmax
  over the label logprobs, or their exp); score = the first label's probability;
  ``GenerativeScoringResponse`` ``{object: "list", model, data: [{index, object:
  "score", score}], usage}``; label ids outside the vocabulary and empty
  label/item lists are 400s.
* ``vllm/entrypoints/serve/tokenize/api_router.py`` and ``.../tokenize/protocol.py``:
  ``POST /tokenize`` with ``TokenizeCompletionRequest`` (prompt, add_special_tokens=True)
  or ``TokenizeChatRequest`` (messages, add_generation_prompt=True,
  add_special_tokens=False); ``TokenizeResponse`` ``{count, max_model_len, tokens, token_strs}``.
* ``vllm/entrypoints/serve/engine/serving.py``: ``BaseServing._check_model``, a model
  name that is given and not served is HTTP 404 "The model `X` does not exist."
  (type NotFoundError, param "model").
* ``vllm/entrypoints/serve/engine/protocol.py``: ``ErrorResponse`` ``{error: {message,
  type, param, code}}``; ``ModelCard`` (id, object "model", max_model_len) in a
  ``ModelList`` ``{object: "list", data}``.

Two test hooks: ``corrupt`` rewrites each score before it is sent (NaN and
out-of-range numbers go out as JSON ``NaN``/numbers, as a broken engine would
send them), and ``app.state.prompts`` records every prompt scored (token ids).
"""
from __future__ import annotations

import json
import math
import threading
from typing import Callable

import torch
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response


def make_vllm_standin(model, tokenizer, *, served_name: str = "tiny-judge", max_model_len: int = 256,
                      corrupt: Callable[[float], float] | None = None) -> FastAPI:
    """A FastAPI app answering as ``vllm serve`` would for `model` (a causal LM)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.prompts = []
    lock = threading.Lock()  # one forward pass at a time

    @app.get("/v1/models")
    def models():
        card = {"id": served_name, "object": "model", "owned_by": "vllm", "root": served_name,
                "parent": None, "max_model_len": max_model_len, "permission": []}
        return {"object": "list", "data": [card]}

    @app.post("/tokenize")
    def tokenize(body: dict):
        if (error := _check_model(body, served_name)) is not None:
            return error
        if "messages" in body:
            if not getattr(tokenizer, "chat_template", None):
                return _error(400, "As of transformers v4.44, default chat template is no longer allowed, so "
                              "you must provide a chat template if the tokenizer does not define one.")
            text = tokenizer.apply_chat_template(body["messages"], tokenize=False,
                                                 add_generation_prompt=body.get("add_generation_prompt", True))
            ids = tokenizer.encode(text, add_special_tokens=body.get("add_special_tokens", False))
        else:
            ids = tokenizer.encode(body["prompt"], add_special_tokens=body.get("add_special_tokens", True))
        return {"count": len(ids), "max_model_len": max_model_len, "tokens": ids, "token_strs": None}

    @app.post("/generative_scoring")
    def generative_scoring(body: dict):
        if (error := _check_model(body, served_name)) is not None:
            return error
        labels, items = body.get("label_token_ids") or [], body.get("items") or []
        vocab = model.config.vocab_size
        if bad := [t for t in labels if not 0 <= t < vocab]:
            return _error(400, f"label_token_id {bad[0]} is out of vocabulary range [0, {vocab}). "
                          "Please provide valid token IDs.")
        if not labels or not items:
            return _error(400, "label_token_ids and items must each contain at least one entry.")
        query = _ids(tokenizer, body["query"], body.get("add_special_tokens", True))
        data = []
        for i, item in enumerate(items):
            item_ids = _ids(tokenizer, item, False)
            prompt = (item_ids + query if body.get("item_first") else query + item_ids)[:max_model_len - 1]
            app.state.prompts.append(prompt)
            with lock:
                logprobs = _next_token_logprobs(model, prompt)
            probs = _label_probabilities([logprobs[t] for t in labels], body.get("apply_softmax", True))
            score = corrupt(probs[0]) if corrupt else probs[0]
            data.append({"index": i, "object": "score", "score": score})
        answer = {"id": "generative-scoring-0", "object": "list", "model": served_name, "data": data,
                  "usage": {"prompt_tokens": 0, "total_tokens": 0, "completion_tokens": 0}}
        # json.dumps writes NaN/Infinity as a broken engine would; Starlette's JSONResponse refuses them
        return Response(json.dumps(answer), media_type="application/json")

    return app


def _check_model(body: dict, served_name: str) -> JSONResponse | None:
    name = body.get("model")
    if not name or name == served_name:
        return None
    return _error(404, f"The model `{name}` does not exist.", "NotFoundError", "model")


def _error(status: int, message: str, err_type: str = "BadRequestError", param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": err_type, "param": param, "code": status}},
                        status_code=status)


def _ids(tokenizer, value, add_special_tokens: bool) -> list[int]:
    return tokenizer.encode(value, add_special_tokens=add_special_tokens) if isinstance(value, str) else list(value)


@torch.inference_mode()
def _next_token_logprobs(model, prompt: list[int]) -> list[float]:
    logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
    return torch.log_softmax(logits, dim=-1).tolist()


def _label_probabilities(logprobs: list[float], apply_softmax: bool) -> list[float]:
    if not apply_softmax:
        return [math.exp(lp) for lp in logprobs]
    top = max(logprobs)
    exps = [math.exp(lp - top) for lp in logprobs]
    return [e / sum(exps) for e in exps]
