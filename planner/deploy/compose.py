"""`compose.yaml` for one server: one service per engine server process (llama-server, vLLM, Ollama).

GPU pinning in containers: NVIDIA cards are passed by `deploy.resources.reservations.devices[].device_ids`
(Compose GPU support docs), so CUDA_VISIBLE_DEVICES is dropped inside (the container renumbers from 0);
AMD cards need /dev/kfd and /dev/dri, and ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES stay as the filter.
Workers for split models (ggml-rpc-server, Ray) run from their scripts, not from compose.

Addresses: inside a container a server must listen on all interfaces for a published port to reach it, so
`--host` / OLLAMA_HOST become 0.0.0.0 there and the port is published on 127.0.0.1 when the script would
have listened on loopback. Only resident roles' services restart by themselves (`restart: unless-stopped`);
an on-demand vLLM instance is in the `on-demand` profile (`docker compose --profile on-demand up vllm-x`).
The key reaches keyed servers as a mounted file (llama-server) or from AGIPLAN_API_KEY in the environment
of `docker compose` (vLLM).
"""

from __future__ import annotations

from typing import Any

import yaml

from planner.deploy import (
    ALL_INTERFACES,
    API_KEY_FILE,
    DEPLOY_SCHEMA_VERSION,
    LOOPBACK,
    Deployment,
    Process,
    comment,
)

IMAGES: dict[tuple[str, str], str] = {
    ("llama.cpp", "nvidia"): "ghcr.io/ggml-org/llama.cpp:server-cuda",
    ("llama.cpp", "amd"): "ghcr.io/ggml-org/llama.cpp:server-rocm",
    ("llama.cpp", "mixed"): "ghcr.io/ggml-org/llama.cpp:server-vulkan",
    ("llama.cpp", "cpu"): "ghcr.io/ggml-org/llama.cpp:server",
    ("vllm", "nvidia"): "vllm/vllm-openai:latest",
    ("vllm", "amd"): "rocm/vllm:latest",
    ("ollama", "nvidia"): "ollama/ollama:latest",
    ("ollama", "amd"): "ollama/ollama:rocm",
    ("ollama", "cpu"): "ollama/ollama:latest",
}


def _bind(proc: Process) -> str:
    argv = list(proc.argv)
    if "--host" in argv:
        return argv[argv.index("--host") + 1]
    return dict(proc.env).get("OLLAMA_HOST", LOOPBACK).rsplit(":", 1)[0]


def _in_container(argv: list[str]) -> list[str]:
    return [ALL_INTERFACES if i > 0 and argv[i - 1] == "--host" else a for i, a in enumerate(argv)]


def _service(proc: Process, models_dir: str) -> dict[str, Any]:
    vendor = proc.vendor if (proc.engine, proc.vendor) in IMAGES else "nvidia"
    svc: dict[str, Any] = {"image": IMAGES[(proc.engine, vendor)]}
    if proc.boot:
        svc["restart"] = "unless-stopped"
    else:
        svc["profiles"] = ["on-demand"]
    env = dict(proc.env)
    bind = _bind(proc)
    if vendor == "nvidia" and proc.gpu_indices:
        env.pop("CUDA_VISIBLE_DEVICES", None)
        svc["deploy"] = {
            "resources": {
                "reservations": {
                    "devices": [
                        {
                            "driver": "nvidia",
                            "device_ids": [str(i) for i in proc.gpu_indices],
                            "capabilities": ["gpu"],
                        }
                    ]
                }
            }
        }
    elif vendor == "amd":
        svc["devices"] = ["/dev/kfd", "/dev/dri"]
        svc["group_add"] = ["video"]
    if proc.engine == "llama.cpp":
        svc["command"] = _in_container(list(proc.argv[1:]))
        svc["volumes"] = [f"{models_dir}:{models_dir}:ro"]
        if proc.kind == "router":
            preset = proc.argv[proc.argv.index("--models-preset") + 1]
            svc["working_dir"] = "/deploy"
            svc["volumes"].append(f"./{preset}:/deploy/{preset}:ro")
        if proc.key_env:
            env.update({k.name: f"/deploy/{API_KEY_FILE}" for k in proc.key_env})
            svc["volumes"].append(f"./{API_KEY_FILE}:/deploy/{API_KEY_FILE}:ro")
    elif proc.engine == "vllm":
        svc["entrypoint"] = ["vllm", "serve"]
        svc["command"] = _in_container(list(proc.argv[2:]))
        svc["ipc"] = "host"
        svc["volumes"] = ["${HOME}/.cache/huggingface:/root/.cache/huggingface"]
        env.update({k.name: "${AGIPLAN_API_KEY:?export AGIPLAN_API_KEY from the api-key file}" for k in proc.key_env})
    else:
        env["OLLAMA_HOST"] = f"{ALL_INTERFACES}:{proc.port}"
        svc["volumes"] = ["ollama:/root/.ollama", f"{models_dir}:{models_dir}:ro", "./ollama:/deploy/ollama:ro"]
    if env:
        svc["environment"] = env
    if proc.port is not None:
        svc["ports"] = [f"{LOOPBACK}:{proc.port}:{proc.port}" if bind == LOOPBACK else f"{proc.port}:{proc.port}"]
    return svc


def compose_yaml(dep: Deployment, models_dir: str) -> str:
    services = {p.name: _service(p, models_dir) for p in dep.processes if p.kind in ("server", "router")}
    doc: dict[str, Any] = {"name": f"agiplan-{dep.server}", "services": services}
    if any(p.engine == "ollama" for p in dep.processes):
        doc["volumes"] = {"ollama": {}}
    text = (
        f"agiplan compose file (agiplan-deploy schema {DEPLOY_SCHEMA_VERSION}), server {dep.server}, "
        f"option {dep.option_index} ({dep.option_kind}).\n"
        "docker compose up -d; Ollama models: docker compose exec <ollama-N> ollama create <role> "
        "-f /deploy/ollama/<role>.Modelfile"
    )
    workers = [p.name for p in dep.processes if p.kind not in ("server", "router")]
    if workers:
        text += f"\nNot in compose (run their scripts): {', '.join(workers)}"
    head = "\n".join(comment(text)) + "\n"
    return head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
