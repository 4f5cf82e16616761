"""The router: one LiteLLM proxy config mapping role names to the engines' OpenAI-compatible endpoints.

Why LiteLLM rather than nginx / Caddy: agents name the role in the request body (`"model": "coder"`), and
the proxy must route on that field; nginx and Caddy route on host / path and would need one URL per role
(or body-parsing scripts). LiteLLM's proxy reads `model_list[].model_name` and forwards to
`litellm_params.api_base` with `litellm_params.model` (the `openai/` prefix = any OpenAI-compatible server:
llama-server, vLLM and Ollama's /v1 all are). Docs: https://docs.litellm.ai/docs/proxy/configs .
Run: `litellm --config router/litellm-config.yaml --port 4000`; agents use http://<router>:4000/v1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from planner.deploy import DEPLOY_SCHEMA_VERSION, Endpoint

ROUTER_PORT = 4000  # LiteLLM proxy's default port


def litellm_entries(endpoints: Sequence[Endpoint]) -> list[dict[str, Any]]:
    return [
        {
            "model_name": e.role,
            "litellm_params": {"model": f"openai/{e.model_name}", "api_base": e.base_url, "api_key": "none"},
            # LiteLLM health-checks a model as chat unless model_info.mode says "embedding" (docs/proxy/health)
            "model_info": {"server": e.server, "engine": e.engine, **({"mode": "embedding"} if e.embedding else {})},
        }
        for e in endpoints
    ]


def litellm_config(endpoints: Sequence[Endpoint]) -> str:
    head = (
        f"# agiplan router config (agiplan-deploy schema {DEPLOY_SCHEMA_VERSION}): role name -> engine endpoint.\n"
        f"# Run: litellm --config litellm-config.yaml --port {ROUTER_PORT}; agents call http://<this host>:"
        f"{ROUTER_PORT}/v1 with model=<role>.\n"
    )
    body = {"model_list": litellm_entries(endpoints)}
    return head + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
