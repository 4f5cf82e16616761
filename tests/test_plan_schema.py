"""Plan and server files are input: what loads is safe to turn into scripts. Each case is one of issue #14's
reproductions (a name that ends a shell line, a NaN, an index past the server's GPUs, a duplicate role) and
must be refused on load with a one-line PlannerError naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_report_fixtures import agents_plan

from planner.catalog import load_catalog
from planner.errors import HardwareError, PlannerError
from planner.hardware.detect import CpuInfo, GpuInfo, HostInfo, write_host_json
from planner.plan.schema import load_plan, save_plan
from planner.plan.servers import server_from_detect
from planner.units import GIB

INJECT = "x &\ntouch pwned\n#"  # the role name: ends the line in start.sh and runs `touch`


def _plan_dict(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "plan.json"
    save_plan(agents_plan(), path)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _load(tmp_path: Path, data: dict[str, Any]) -> None:
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    load_plan(path)


def _placement(data: dict[str, Any]) -> dict[str, Any]:
    p: dict[str, Any] = data["options"][0]["servers"][0]["placements"][0]  # the reasoner on main
    return p


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # names: the stack file's grammar (letters, digits, - _ .), so no newline, '/', '&' or leading '.'
        (lambda d: _placement(d).update(role=INJECT), "role"),
        (lambda d: _placement(d).update(role="../../../victim/backup"), "role"),
        (lambda d: d["options"][0]["servers"][0].update(name="main\ninclude: evil"), "name"),
        (lambda d: d.update(stack_name="agents\nrm -rf ~"), "stack_name"),
        (lambda d: d.update(created_at="2025\n$(touch pwned)"), "created_at"),
        (lambda d: d.update(agiplan_version="0.1 $(id)"), "agiplan_version"),
        (lambda d: _placement(d).update(quant="Q4_K_M --rpc 1.2.3.4:1"), "quant"),
        (lambda d: _placement(d).update(kv_type="f16\nx"), "kv_type"),
        (lambda d: _placement(d).update(model="/models/a.gguf\nADAPTER /etc/shadow"), "model"),
        (lambda d: _placement(d).update(adapters=["a\rb"]), "adapters"),
        (lambda d: _placement(d).update(shares_base_with="a b"), "shares_base_with"),
        (lambda d: _placement(d).update(split_hosts=["main", "x;y"]), "split_hosts"),
        (lambda d: _placement(d).update(memory_by_device={"gpu0;x": 1}), "memory_by_device"),
        # numbers finite and in range (json.dumps writes NaN, as an edited file may hold)
        (
            lambda d: d["options"][1]["servers"][1]["placements"][0].update(gpu_memory_utilization=float("nan")),
            "gpu_memory_utilization",
        ),
        (
            lambda d: d["options"][1]["servers"][1]["placements"][0].update(gpu_memory_utilization=-5),
            "gpu_memory_utilization",
        ),
        (lambda d: _placement(d).update(decode_tok_s=float("inf")), "decode_tok_s"),
        (lambda d: _placement(d).update(swap_in_s=-1.0), "swap_in_s"),
        (lambda d: _placement(d).update(ctx=0), "ctx"),
        # indices in range: main has 2 GPUs
        (lambda d: _placement(d).update(gpu_indices=[0, 2]), "GPU index 2"),
        (lambda d: _placement(d).update(gpu_indices=[-1]), "gpu_indices"),
        # names unique
        (lambda d: d["options"][0]["servers"][0]["placements"].append(_placement(d)), "placed twice"),
        (lambda d: d["options"][1]["servers"][1].update(name="main"), "used twice"),
        (lambda d: _placement(d).update(split_hosts=["main", "elsewhere"]), "split host 'elsewhere'"),
    ],
)
def test_hostile_plan_is_refused_on_load(tmp_path: Path, edit: Any, expected: str) -> None:
    data = _plan_dict(tmp_path)
    edit(data)
    with pytest.raises(PlannerError, match=expected) as err:
        _load(tmp_path, data)
    assert "\n" not in str(err.value)  # one line: the CLI prints it as is (exit 2)


def test_saved_plan_loads_back(tmp_path: Path) -> None:
    _load(tmp_path, _plan_dict(tmp_path))  # the fixture itself passes every new rule


def _host(hostname: str, gpu_name: str = "NVIDIA GeForce RTX 4090") -> HostInfo:
    return HostInfo(
        hostname=hostname,
        gpus=[GpuInfo(0, gpu_name, "nvidia", 24564 * 2**20, 23 * GIB, GIB, "550", "rtx-4090", "nvml")],
        cpu=CpuInfo("AMD Ryzen 9 7950X 16-Core Processor", "amd", 16, 32, True, True, "ryzen-9-7950x"),
        ram_total_bytes=128 * GIB,
        ram_available_bytes=120 * GIB,
    )


@pytest.mark.parametrize(
    ("hostname", "gpu_name"),
    [
        (INJECT, "NVIDIA GeForce RTX 4090"),  # the reproduction through recommend --server-file
        ("../../etc", "NVIDIA GeForce RTX 4090"),
        ("box name", "NVIDIA GeForce RTX 4090"),
        ("box", "RTX 4090\n$(touch pwned)"),
    ],
)
def test_hostile_server_file_is_refused(tmp_path: Path, hostname: str, gpu_name: str) -> None:
    path = tmp_path / "server.json"
    write_host_json(path, _host(hostname, gpu_name))
    with pytest.raises(HardwareError, match=r"server\.json"):
        server_from_detect(path, load_catalog())


def test_plain_server_file_keeps_its_hostname(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    write_host_json(path, _host("gpu-box.lan"))
    assert server_from_detect(path, load_catalog()).name == "gpu-box.lan"
