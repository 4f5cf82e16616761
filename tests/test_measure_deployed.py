"""planner.measure.deployed: which roles of a deployment folder the bench measures, where, and with what key.
The run against real servers is tests/test_deploy_loopback.py; these check the folder is read as written and
refused when it does not match the plan. Plans: tests/test_report_fixtures.agents_plan (option 1 = two-server:
reasoner on main; coder, summarizer and chat on `second`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_report_fixtures import agents_plan
from typer.testing import CliRunner

from planner.cli import app
from planner.deploy import API_KEY_FILE, build_deployment
from planner.deploy.write import MANIFEST, write_deployment
from planner.errors import PlannerError
from planner.measure.deployed import load_deployed
from planner.plan.schema import save_plan

KEY = "sk-" + "k" * 43


def _deployed(tmp_path: Path, option: int = 1) -> Path:
    out = tmp_path / "main"
    write_deployment(
        build_deployment(agents_plan(), "main", option, addresses={"second": "10.0.0.2"}), out, api_key=KEY
    )
    return out


def test_every_role_of_the_option_with_its_url_and_key(tmp_path: Path) -> None:
    out = _deployed(tmp_path)
    d = load_deployed(agents_plan(), tmp_path / "plan.json", out)
    by_role = {r.placement.role: r for r in d.roles}
    assert set(by_role) == {"reasoner", "coder", "summarizer", "chat"}
    assert d.option == 1 and d.api_key == KEY
    # main runs the router: its engines listen on loopback without a key; `second`'s are reached with it
    assert by_role["reasoner"].url.startswith("http://127.0.0.1:") and not by_role["reasoner"].keyed
    assert by_role["coder"].url.startswith("http://10.0.0.2:") and by_role["coder"].keyed
    assert (
        by_role["reasoner"].placement.decode_tok_s_alone
        == agents_plan().options[1].servers[0].placements[0].decode_tok_s_alone
    )


def test_router_host_readme_says_how_to_bench_it(tmp_path: Path) -> None:
    out = _deployed(tmp_path)
    assert "agiplan bench --plan plan.json --deployment . --out bench.json" in (out / "README.md").read_text()
    second = build_deployment(agents_plan(), "second", 1)
    assert "--deployment" not in second.files["README.md"]  # bench from the router's folder, which lists every role


def test_router_asks_for_the_key_by_server_not_by_address(tmp_path: Path) -> None:
    """A second host reached at 127.0.0.1 (the loopback test) still gets the key in the LiteLLM config."""
    dep = build_deployment(agents_plan(), "main", 1, addresses={"second": "127.0.0.1"})
    entries = {
        e["model_name"]: e["litellm_params"]
        for e in yaml.safe_load(dep.files["router/litellm-config.yaml"])["model_list"]
    }
    assert entries["coder"]["api_key"] == "os.environ/AGIPLAN_API_KEY"
    assert entries["reasoner"]["api_key"] == "none"
    manifest = {e["role"]: e for e in dep.manifest()["endpoints"]}  # type: ignore[union-attr]
    assert manifest["coder"]["api_key"] is True and manifest["reasoner"]["api_key"] is False


def test_a_folder_of_another_option_or_plan_is_refused(tmp_path: Path) -> None:
    out = _deployed(tmp_path)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["option"] = 9
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PlannerError, match="deploys option 9"):
        load_deployed(agents_plan(), tmp_path / "plan.json", out)
    manifest["option"] = 1
    manifest["endpoints"][0]["role"] = "ghost"
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PlannerError, match="role 'ghost' is not in option 1"):
        load_deployed(agents_plan(), tmp_path / "plan.json", out)


def test_missing_manifest_or_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PlannerError, match=r"no deploy\.json"):
        load_deployed(agents_plan(), tmp_path / "plan.json", tmp_path)
    out = _deployed(tmp_path)
    (out / API_KEY_FILE).unlink()
    with pytest.raises(PlannerError, match="no api-key file"):
        load_deployed(agents_plan(), tmp_path / "plan.json", out)


def test_cli_deployment_needs_plan_and_never_prints_the_key(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "--deployment", str(tmp_path)])
    assert isinstance(res.exception, PlannerError) and "--deployment needs --plan" in str(res.exception)
    out = _deployed(tmp_path)
    plan_path = tmp_path / "plan.json"
    save_plan(agents_plan(), plan_path)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["endpoints"][0]["role"] = "ghost " + KEY  # an error message that would echo the key
    (out / MANIFEST).write_text(json.dumps(manifest))
    res = runner.invoke(app, ["bench", "--plan", str(plan_path), "--deployment", str(out)])
    assert isinstance(res.exception, PlannerError) and "is not in option 1" in str(res.exception)
    assert KEY not in str(res.exception) and KEY not in res.output
    manifest["endpoints"][0]["role"] = "reasoner"
    (out / MANIFEST).write_text(json.dumps(manifest))
    res = runner.invoke(app, ["bench", "--plan", str(plan_path), "--deployment", str(out), "--option", "0"])
    assert isinstance(res.exception, PlannerError) and "deploys option 1" in str(res.exception)
