"""`compose.yaml` for one server: one service per engine server process (llama-server, vLLM, Ollama).

GPU pinning in containers: NVIDIA cards are passed by `deploy.resources.reservations.devices[].device_ids`
(Compose GPU support docs), so CUDA_VISIBLE_DEVICES is dropped inside (the container renumbers from 0);
AMD cards need /dev/kfd and /dev/dri, and ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES stay as the filter.
Workers for split models (ggml-rpc-server, Ray) run from their scripts, not from compose.
"""

from __future__ import annotations

from typing import Any

import yaml

from planner.deploy import DEPLOY_SCHEMA_VERSION, Deployment, Process

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


def _service(proc: Process, models_dir: str) -> dict[str, Any]:
    vendor = proc.vendor if (proc.engine, proc.vendor) in IMAGES else "nvidia"
    svc: dict[str, Any] = {"image": IMAGES[(proc.engine, vendor)], "restart": "unless-stopped"}
    env = dict(proc.env)
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
        svc["command"] = list(proc.argv[1:])
        svc["volumes"] = [f"{models_dir}:{models_dir}:ro"]
    elif proc.engine == "vllm":
        svc["entrypoint"] = ["vllm", "serve"]
        svc["command"] = list(proc.argv[2:])
        svc["ipc"] = "host"
        svc["volumes"] = ["${HOME}/.cache/huggingface:/root/.cache/huggingface"]
    else:
        svc["volumes"] = ["ollama:/root/.ollama", f"{models_dir}:{models_dir}:ro", "./ollama:/deploy/ollama:ro"]
    if env:
        svc["environment"] = env
    if proc.port is not None:
        svc["ports"] = [f"{proc.port}:{proc.port}"]
    return svc


def compose_yaml(dep: Deployment, models_dir: str) -> str:
    services = {p.name: _service(p, models_dir) for p in dep.processes if p.kind == "server"}
    doc: dict[str, Any] = {"name": f"agiplan-{dep.server}", "services": services}
    if any(p.engine == "ollama" for p in dep.processes):
        doc["volumes"] = {"ollama": {}}
    head = (
        f"# agiplan compose file (agiplan-deploy schema {DEPLOY_SCHEMA_VERSION}), server {dep.server}, "
        f"option {dep.option_index} ({dep.option_kind}).\n"
        "# docker compose up -d; Ollama models: docker compose exec <ollama-N> ollama create <role> "
        "-f /deploy/ollama/<role>.Modelfile\n"
    )
    workers = [p.name for p in dep.processes if p.kind != "server"]
    if workers:
        head += f"# Not in compose (run their scripts): {', '.join(workers)}\n"
    return head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
