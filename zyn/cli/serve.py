"""`zyn serve`: an HTTP reward server (zyn's /v1/rewards and OpenRLHF's /get_reward).

Every --prompt is loaded on the same model (it is loaded once); requests pick one
with "prompt": NAME, the first is the default (and the one /get_reward uses).
It listens on 127.0.0.1 unless told otherwise, and refuses a non-loopback address
without an API key (--api-key or $ZYN_API_KEY) unless --insecure-public is given.
SIGTERM or Ctrl-C stops it gracefully: requests in flight are answered first.

    zyn serve --model qwen2.5-coder-0.5b-instruct --prompt sentiment --prompt detox --port 8000
    curl -s localhost:8000/v1/rewards -H 'content-type: application/json' -d '{"texts": ["Great film!"]}'
"""
from __future__ import annotations

import argparse
import logging
import os

from .. import server
from .common import (add_model_options, finite_float, load_reward_model, non_negative_float, port_number,
                     positive_float, positive_int)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve rewards over HTTP (OpenRLHF remote reward, /v1/rewards)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, "prompt-set name, YAML path or question; repeat to serve several on one model "
                         "(default: sentiment)", several=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8000, help="port to listen on (default: %(default)s)")
    p.add_argument("--api-key", default=os.environ.get("ZYN_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $ZYN_API_KEY; prefer the variable, "
                   "a key on the command line shows in ps)")
    p.add_argument("--insecure-public", action="store_true",
                   help="allow a non-loopback --host without an API key")
    p.add_argument("--trusted-network", action="append", default=[], metavar="CIDR",
                   help="clients from this network need no key (OpenRLHF sends none); repeatable. Without a "
                   "key, clients from elsewhere are refused")
    d = server.DEFAULTS
    p.add_argument("--max-batch", type=positive_int, default=d["batch_size"],
                   help="most items per model call (default: %(default)s)")
    p.add_argument("--max-wait-ms", type=non_negative_float, default=d["max_wait_ms"],
                   help="how long a request waits for others to share its batch (default: %(default)s)")
    p.add_argument("--max-items", type=positive_int, default=d["max_items"],
                   help="most items per request (default: %(default)s)")
    p.add_argument("--max-chars", type=positive_int, default=d["max_chars"],
                   help="most characters per item (default: %(default)s)")
    p.add_argument("--max-body-mb", type=positive_float, default=d["max_body_bytes"] / 2**20,
                   help="largest request body, MB (default: %(default)s)")
    p.add_argument("--max-request-chars", type=positive_int, default=d["max_request_chars"],
                   help="most characters per request (default: %(default)s)")
    p.add_argument("--timeout", type=positive_float, default=d["request_timeout_s"],
                   help="seconds before a 504 (default: %(default)s)")
    p.add_argument("--body-timeout", type=positive_float, default=d["body_timeout_s"],
                   help="seconds a client has to send its request body (408 after; default: %(default)s)")
    p.add_argument("--header-timeout", type=positive_float, default=d["header_timeout_s"],
                   help="seconds a client has to send its request headers (connection closed after; default: "
                        "%(default)s)")
    p.add_argument("--max-connections", type=positive_int, default=d["max_connections"],
                   help="most open connections and requests at once (503 beyond; default: %(default)s)")
    p.add_argument("--forwarded-allow-ips", action="append", default=[], metavar="IP", type=_address,
                   help="a reverse proxy whose X-Forwarded-For header names the client (repeatable); without it "
                   "the client is the connection's address, so the header cannot claim a trusted network")
    p.add_argument("--policy-chat-format", default="auto",
                   help="how /get_reward reads the policy's chat markup in OpenRLHF's query: auto (recognise "
                   "chatml, llama3, gemma by their markers), one of those names, none, or a folder with the "
                   "policy's tokenizer")
    p.add_argument("--failure-reward", type=finite_float, default=d["failure_reward"],
                   help="reward /get_reward gives an item that cannot be scored (never null; default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    server.check_bind(args.host, args.api_key, args.insecure_public, args.trusted_network)  # before the model load
    chat_format = _chat_format(args.policy_chat_format)
    models = load_models(args)
    app = server.create_app(models, max_items=args.max_items, max_chars=args.max_chars,
                            max_request_chars=args.max_request_chars, max_body_bytes=int(args.max_body_mb * 2**20),
                            api_key=args.api_key or None, batch_size=args.max_batch, max_wait_ms=args.max_wait_ms,
                            request_timeout_s=args.timeout, body_timeout_s=args.body_timeout,
                            failure_reward=args.failure_reward, trusted_networks=args.trusted_network,
                            policy_chat_format=chat_format)
    log.info("serving %s on http://%s:%d (docs at /docs)", ", ".join(models), args.host, args.port)
    server.uvicorn_server(app, args.host, args.port, header_timeout_s=args.header_timeout,
                          max_connections=args.max_connections, log_level="info" if args.verbose else "warning",
                          graceful_s=args.timeout + 10, forwarded_allow_ips=args.forwarded_allow_ips).run()
    return 0


def _address(text: str) -> str:
    """An IP address or network (CIDR) of a reverse proxy."""
    import ipaddress

    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a proxy's IP address or network, got {text!r}") from None
    return text


def _chat_format(spec: str):
    """A named chat format as is (checked now, not at the first request); a folder as the
    policy's tokenizer (its chat template)."""
    from ..integrations.chatformat import resolve_chat_format

    if spec == "auto":
        return None
    if not os.path.isdir(spec):
        resolve_chat_format(spec)  # an unknown name is an error before the model loads
        return spec
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec)


def load_models(args: argparse.Namespace) -> dict:
    """{prompt-set name: reward model}, all sharing the model loaded for the first."""
    specs = args.prompt or ["sentiment"]
    first = load_reward_model(args, prompt=specs[0])
    models: dict = {}
    for i, spec in enumerate(specs):
        rm = first if i == 0 else first.with_prompt(spec, reward=args.reward)
        name, n = rm.prompt_set.name, 2
        while name in models:  # e.g. a prompt set given twice
            name, n = f"{rm.prompt_set.name}-{n}", n + 1
        models[name] = rm
    return models
