"""Every flag, environment variable and Modelfile instruction that `agiplan deploy` emits is one the engine
documents. The lists below are copied by hand from the cited documentation; a flag not in them fails the test.
"""

from __future__ import annotations

import re
from pathlib import Path

from test_report_fixtures import agents_plan, gemma_plan

from planner.deploy import Deployment, build_deployment

# llama.cpp tools/server/README.md ("Common params" / "Server-specific params" tables), as vendored in
# llama-cpp-python 0.3.36 (vendor/llama.cpp at commit 0c1e570): each row lists the short and long forms.
LLAMA_SERVER_FLAGS = {
    "-m", "--model",  # | `-m, --model FNAME` | model path to load
    "-hf", "-hfr", "--hf-repo",  # | `-hf, -hfr, --hf-repo <user>/<model>[:quant]` |
    "-a", "--alias",  # | `-a, --alias STRING` | set model name aliases (to be used by API)
    "-c", "--ctx-size",  # | `-c, --ctx-size N` | size of the prompt context
    "-b", "--batch-size",  # | `-b, --batch-size N` | logical maximum batch size (default: 2048)
    "-ub", "--ubatch-size",  # | `-ub, --ubatch-size N` | physical maximum batch size (default: 512)
    "-np", "--parallel",  # | `-np, --parallel N` | number of server slots
    "-ngl", "--gpu-layers", "--n-gpu-layers",  # | `-ngl, --gpu-layers, --n-gpu-layers N` |
    "-ncmoe", "--n-cpu-moe",  # | `-ncmoe, --n-cpu-moe N` | keep the MoE weights of the first N layers in the CPU
    "-ts", "--tensor-split",  # | `-ts, --tensor-split N0,N1,N2,...` |
    "-ctk", "--cache-type-k",  # | `-ctk, --cache-type-k TYPE` |
    "-ctv", "--cache-type-v",  # | `-ctv, --cache-type-v TYPE` |
    "-fa", "--flash-attn",  # | `-fa, --flash-attn [on|off|auto]` |
    "-dev", "--device",  # | `-dev, --device <dev1,dev2,..>` | (none = don't offload)
    "--rpc",  # | `--rpc SERVERS` | comma-separated list of RPC servers (host:port)
    "--lora",  # | `--lora FNAME` |
    "--embedding", "--embeddings",  # | `--embedding, --embeddings` | restrict to only support embedding use case
    "--host",  # | `--host HOST` |
    "--port",  # | `--port PORT` |
}  # fmt: skip
# Newer than 0.3.36's README; from the pinned build b11434's (tests/data/llama_server_readme_options_b11434.md).
LLAMA_SERVER_FLAGS_B11434 = {
    "--cors-origins",  # | `--cors-origins ORIGINS` | ... if set to special value 'localhost', reflect ... localhost
    "--cors-credentials", "--no-cors-credentials",  # | `--cors-credentials, --no-cors-credentials` |
    "--models-preset",  # | `--models-preset PATH` | INI file containing model presets for the router server
    "--models-max",  # | `--models-max N` | maximum number of models to load simultaneously
    "--sleep-idle-seconds",  # | `--sleep-idle-seconds SECONDS` | idleness after which the server will sleep
    "-sm", "--split-mode",  # | `-sm, --split-mode {none,layer,row,tensor}` | ... tensor: ... EXPERIMENTAL
    "-fit", "--fit",  # | `-fit, --fit [on\|off]` | whether to adjust unset arguments to fit in device memory
}  # fmt: skip
LLAMA_SERVER_SOURCE = "llama.cpp tools/server/README.md"

# llama.cpp tools/rpc/rpc-server.cpp (argument parser: -H/--host, -t/--threads, -d/--device, -p/--port,
# -c/--cache) and tools/rpc/README.md (`ggml-rpc-server -p 50052`, `-c` local cache).
RPC_SERVER_FLAGS = {"-H", "--host", "-t", "--threads", "-d", "--device", "-p", "--port", "-c", "--cache"}

# vLLM `vllm serve` engine / frontend arguments, https://docs.vllm.ai/en/latest/cli/serve.html and
# https://docs.vllm.ai/en/latest/configuration/engine_args.html .
VLLM_SERVE_FLAGS = {
    "--served-model-name",
    "--host",
    "--port",
    "--max-model-len",
    "--max-num-seqs",
    "--gpu-memory-utilization",
    "--tensor-parallel-size",
    "--pipeline-parallel-size",
    "--distributed-executor-backend",
    "--quantization",
    "--kv-cache-dtype",
    "--enable-lora",
    "--lora-modules",
    "--hf-overrides",  # JSON merged into the HF config (engine args); the context-extension example's way to YaRN
}

# Ray `ray start` CLI, https://docs.ray.io/en/latest/cluster/cli.html#ray-start (used by vLLM's multi-node docs).
RAY_START_FLAGS = {"--head", "--port", "--address", "--block"}

# Ollama envconfig/config.go (OLLAMA_HOST, OLLAMA_NUM_PARALLEL, OLLAMA_MAX_LOADED_MODELS, OLLAMA_KV_CACHE_TYPE,
# OLLAMA_FLASH_ATTENTION, OLLAMA_KEEP_ALIVE) and docs/gpu.md (CUDA_VISIBLE_DEVICES / ROCR_VISIBLE_DEVICES,
# "-1" forces CPU).
OLLAMA_ENV = {
    "OLLAMA_HOST",
    "OLLAMA_NUM_PARALLEL",
    "OLLAMA_MAX_LOADED_MODELS",
    "OLLAMA_KV_CACHE_TYPE",
    "OLLAMA_FLASH_ATTENTION",
    "OLLAMA_KEEP_ALIVE",
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
}
# Ollama docs/modelfile.md: instructions FROM / PARAMETER / ADAPTER; `num_ctx` in "Valid Parameters and Values".
MODELFILE_INSTRUCTIONS = {"FROM", "PARAMETER", "ADAPTER"}
MODELFILE_PARAMETERS = {"num_ctx"}
# `ollama create NAME -f FILE` (ollama create --help).
OLLAMA_CREATE_FLAGS = {"-f", "--file"}

# GPU pinning variables: CUDA (CUDA C Programming Guide, env vars), ROCm (HIP docs: HIP_VISIBLE_DEVICES,
# ROCR_VISIBLE_DEVICES), llama.cpp Vulkan backend (GGML_VK_VISIBLE_DEVICES, docs/build.md).
PIN_ENV = {"CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "GGML_VK_VISIBLE_DEVICES"}

FLAGS_BY_PROGRAM = {
    "llama-server": LLAMA_SERVER_FLAGS | LLAMA_SERVER_FLAGS_B11434,
    "ggml-rpc-server": RPC_SERVER_FLAGS,
    "vllm": VLLM_SERVE_FLAGS,
    "ray": RAY_START_FLAGS,
    "ollama": set(),  # `ollama serve` takes its settings from the environment only
}


def flags(argv: tuple[str, ...] | list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv[1:] if a.startswith("-") and not re.fullmatch(r"-\d+", a)]


def all_deployments(tmp_path: Path) -> list[Deployment]:
    plan = agents_plan()
    deps = []
    for i, opt in enumerate(plan.options):
        for s in opt.servers:
            deps.append(build_deployment(plan, s.name, i, compose=True))
    deps.append(build_deployment(gemma_plan(tmp_path / "gemma.gguf"), "box"))
    return deps


def test_every_emitted_flag_is_documented(tmp_path: Path) -> None:
    seen: dict[str, set[str]] = {}
    for dep in all_deployments(tmp_path):
        for proc in dep.processes:
            program = proc.argv[0]
            assert program in FLAGS_BY_PROGRAM, f"{proc.name}: unexpected program {program}"
            used = set(flags(proc.argv))
            assert used <= FLAGS_BY_PROGRAM[program], f"{proc.name}: undocumented {used - FLAGS_BY_PROGRAM[program]}"
            seen.setdefault(program, set()).update(used)
            env_ok = PIN_ENV | (OLLAMA_ENV if proc.engine == "ollama" else set())
            # the key: llama-server's env of --api-key-file (README: "(env: LLAMA_ARG_API_KEY_FILE)"), vLLM's
            # VLLM_API_KEY (docs.vllm.ai serve: "--api-key ... (env VLLM_API_KEY)")
            assert {k.name for k in proc.key_env} <= {"LLAMA_ARG_API_KEY_FILE", "VLLM_API_KEY"}, proc.name
            assert {k for k, _ in proc.env} <= env_ok, proc.name
            for cmd in proc.setup:
                assert cmd[:2] == ("ollama", "create") and set(flags(cmd[1:])) <= OLLAMA_CREATE_FLAGS
    # The fixtures exercise the flags the issue names, so this test checks something for each engine.
    assert {"-m", "-c", "-np", "-ngl", "-ts", "-ctk", "-ctv", "-fa", "--port", "--rpc", "-dev"} <= seen["llama-server"]
    assert {"--gpu-memory-utilization", "--max-model-len", "--max-num-seqs", "--tensor-parallel-size"} <= seen["vllm"]
    assert {"-H", "-p"} <= seen["ggml-rpc-server"]


def test_modelfiles_use_documented_instructions_and_parameters(tmp_path: Path) -> None:
    n = 0
    for dep in all_deployments(tmp_path):
        for rel, text in dep.files.items():
            if not rel.endswith(".Modelfile"):
                continue
            for line in text.splitlines():
                if not line or line.startswith("#"):
                    continue
                instr, _, rest = line.partition(" ")
                assert instr in MODELFILE_INSTRUCTIONS, line
                if instr == "PARAMETER":
                    assert rest.split()[0] in MODELFILE_PARAMETERS, line
                n += 1
    assert n >= 2


def test_vllm_pipeline_split_uses_ray(tmp_path: Path) -> None:
    """A vLLM model split over two servers: Ray head + `--pipeline-parallel-size 2 --distributed-executor-backend
    ray` on the head server, `ray start --address head:6379` on the other (vLLM distributed serving docs)."""
    plan = agents_plan()
    opt = plan.options[2]
    p = opt.servers[0].placements[0]
    opt.servers[0].placements[0] = p.model_copy(update={"engine": "vllm", "quant": "AWQ-INT4", "tensor_parallel": 2})
    head = build_deployment(plan, "main", 2)
    worker = build_deployment(plan, "helper", 2)
    serve = next(x for x in head.processes if x.argv[:2] == ("vllm", "serve"))
    args = list(serve.argv)
    assert args[args.index("--pipeline-parallel-size") + 1] == "2"
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--distributed-executor-backend") + 1] == "ray"
    assert [x.kind for x in head.processes][:2] == ["ray-head", "server"]
    assert worker.processes[0].argv == ("ray", "start", "--address=main:6379", "--block")
    # the helper's AMD card is pinned with HIP_VISIBLE_DEVICES for vLLM (ROCm docs)
    assert dict(worker.processes[0].env) == {"HIP_VISIBLE_DEVICES": "0"}
    for proc in head.processes + worker.processes:
        assert set(flags(proc.argv)) <= FLAGS_BY_PROGRAM[proc.argv[0]]


# The option tables of llama.cpp's tools/server/README.md as vendored in the llama-cpp-python 0.3.36 sdist,
# committed so that this check runs on every machine (it was skipped wherever the sdist was not unpacked).
SERVER_README_OPTIONS = Path(__file__).parent / "data" / "llama_server_readme_options.md"


def _documented(path: Path) -> set[str]:
    rows = re.findall(r"^\| `([^`]*)`", path.read_text(encoding="utf-8"), flags=re.M)
    return {tok.rstrip(",") for row in rows for tok in row.split() if tok.startswith("-")}


def test_llama_server_list_matches_the_readme() -> None:
    documented = _documented(SERVER_README_OPTIONS)
    assert documented >= LLAMA_SERVER_FLAGS, LLAMA_SERVER_FLAGS - documented
    pinned = _documented(SERVER_README_OPTIONS.with_name("llama_server_readme_options_b11434.md"))
    assert pinned >= LLAMA_SERVER_FLAGS | LLAMA_SERVER_FLAGS_B11434, LLAMA_SERVER_FLAGS_B11434 - pinned
    assert "--api-key-file" in pinned  # its env LLAMA_ARG_API_KEY_FILE carries the key


def test_moe_expert_offload_becomes_n_cpu_moe() -> None:
    """A MoE placement whose estimate keeps the experts of the first 8 layers on the CPU (estimate()'s
    cpu_moe_layers, the plan's n_cpu_moe) is started with llama-server's --n-cpu-moe 8; dense models get none."""
    from test_report_fixtures import main_server, placement

    from planner.deploy.llama_cpp import server_argv

    moe = placement("generalist", "mixtral-8x7b", "Mixtral 8x7B", n_cpu_moe=8)
    dense = placement("chat", "llama-3-8b", "Llama 3 8B")
    server = main_server([moe, dense])
    argv = server_argv(server, moe, 8080, "/models")
    assert argv[argv.index("--n-cpu-moe") + 1] == "8"
    assert "--n-cpu-moe" not in server_argv(server, dense, 8081, "/models")


def test_tensor_split_mode_is_passed_on() -> None:
    """A placement planned with split mode tensor starts with `-sm tensor -fit off` and no memory-proportional
    -ts (tensor mode splits evenly; llama.cpp docs/multi-gpu.md: --fit is not supported with tensor); a layer
    split keeps -ts and gets no -sm (layer is llama-server's default)."""
    from test_report_fixtures import main_server, placement

    from planner.deploy.llama_cpp import server_argv

    layer = placement("reasoner", "llama-3-70b", "Llama 3 70B")
    layer = layer.model_copy(update={"gpu_indices": [0, 1]})
    tensor = layer.model_copy(update={"role": "fast", "split_mode": "tensor"})
    server = main_server([layer, tensor])
    argv = server_argv(server, tensor, 8080, "/models")
    assert argv[argv.index("-sm") + 1] == "tensor"
    assert argv[argv.index("-fit") + 1] == "off"
    assert "-ts" not in argv
    plain = server_argv(server, layer, 8081, "/models")
    assert "-ts" in plain and "-sm" not in plain
    assert set(flags(argv)) <= FLAGS_BY_PROGRAM["llama-server"]
