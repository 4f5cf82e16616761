"""agiplan: plan, verify and report local multi-LLM deployments (the library; the CLI lives in planner.cli)."""

__version__ = "0.1.0"
