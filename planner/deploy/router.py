"""The router: one LiteLLM proxy config mapping role names to the engines' OpenAI-compatible endpoints.

Why LiteLLM rather than nginx / Caddy: agents name the role in the request body (`"model": "coder"`), and
the proxy must route on that field; nginx and Caddy route on host / path and would need one URL per role
(or body-parsing scripts). LiteLLM's proxy reads `model_list[].model_name` and forwards to
`litellm_params.api_base` with `litellm_params.model` (the `openai/` prefix = any OpenAI-compatible server:
llama-server, vLLM and Ollama's /v1 all are). Docs: https://docs.litellm.ai/docs/proxy/configs .

The router runs on the option's first server (`start-router.sh`: loopback, port 4000). Engines on other
servers require the deployment's API key: their entries read it as `os.environ/AGIPLAN_API_KEY` (LiteLLM's
way to take a secret from the environment, docs/proxy/configs "os.environ/"), and the proxy itself asks
agents for the same key (`general_settings.master_key`). On-demand llama.cpp roles point at their router
llama-server, which loads the role named in the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from planner.deploy import API_KEY_FILE, DEPLOY_SCHEMA_VERSION, LOOPBACK, Endpoint, comment

ROUTER_PORT = 4000  # LiteLLM proxy's default port
KEY_ENV = "AGIPLAN_API_KEY"
MASTER_KEY_ENV = "LITELLM_MASTER_KEY"


def litellm_entries(endpoints: Sequence[Endpoint]) -> list[dict[str, Any]]:
    return [
        {
            "model_name": e.role,
            "litellm_params": {
                "model": f"openai/{e.model_name}",
                "api_base": e.base_url,
                # an engine on the router's host has no key; OpenAI clients still need a non-empty one
                "api_key": f"os.environ/{KEY_ENV}" if e.keyed else "none",
            },
            # LiteLLM health-checks a model as chat unless model_info.mode says "embedding" (docs/proxy/health)
            "model_info": {"server": e.server, "engine": e.engine, **({"mode": "embedding"} if e.embedding else {})},
        }
        for e in endpoints
    ]


def litellm_config(endpoints: Sequence[Endpoint]) -> str:
    head = comment(
        f"agiplan router config (agiplan-deploy schema {DEPLOY_SCHEMA_VERSION}): role name -> engine endpoint.\n"
        f"Run ../start-router.sh on the first server; agents call http://127.0.0.1:{ROUTER_PORT}/v1 with "
        f"model=<role> and the key in {API_KEY_FILE}."
    )
    body = {
        "model_list": litellm_entries(endpoints),
        "general_settings": {"master_key": f"os.environ/{MASTER_KEY_ENV}"},
    }
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def start_script(header: str) -> str:
    """Start the LiteLLM proxy on loopback with the deployment's key as the engines' and the agents' key."""
    lines = [
        "#!/usr/bin/env bash",
        *comment(header),
        "# The router: LiteLLM proxy on 127.0.0.1:4000 (pip install 'litellm[proxy]'); change --host to expose it.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        f'export {KEY_ENV}="$(head -n 1 {API_KEY_FILE})"',
        f'export {MASTER_KEY_ENV}="${KEY_ENV}"',
        f"exec litellm --config router/litellm-config.yaml --host {LOOPBACK} --port {ROUTER_PORT}",
    ]
    return "\n".join(lines) + "\n"
