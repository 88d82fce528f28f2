"""The README's settings table lists every setting with its description, so an operator never has to read
settings.py to find a knob (and a new setting cannot land undocumented)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from k8s_runbooks.chatops.settings import ChatOpsSettings
from k8s_runbooks.flags.settings import FlagSettings
from k8s_runbooks.sandbox.settings import SandboxSettings
from k8s_runbooks.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("model", [Settings, ChatOpsSettings, FlagSettings, SandboxSettings], ids=["product", "chatops", "flags", "sandbox"])
def test_every_setting_is_in_the_readme_table_with_its_description(model: type[BaseSettings]) -> None:
    prefix = str(model.model_config["env_prefix"])
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]  # cells between unescaped pipes
        if line.startswith("| `K8S_RUNBOOKS_") and len(cells) == 3:
            rows[cells[0].strip("`")] = cells[2]
    missing = [f"{prefix}{n.upper()}" for n in model.model_fields if f"{prefix}{n.upper()}" not in rows]
    assert missing == [], f"settings missing from the README table: {missing}"
    for name, field in model.model_fields.items():
        assert field.description, f"{name} has no description"
        assert rows[f"{prefix}{name.upper()}"], f"{prefix}{name.upper()} has an empty meaning in the README"


def test_product_defaults_never_point_at_sandbox_ports() -> None:
    sandbox_ports = {str(f.default) for n, f in SandboxSettings.model_fields.items() if n.endswith("_port")}
    product = Settings.model_construct()
    for name in ("prometheus_url", "alertmanager_url", "pushgateway_url", "receiver_url"):
        port = getattr(product, name).rsplit(":", 1)[1]
        assert port not in sandbox_ports, (name, port)
    assert str(product.receiver_port) not in sandbox_ports
