"""The README's settings table lists every setting with its description, so an operator never has to read
settings.py to find a knob (and a new setting cannot land undocumented)."""

from __future__ import annotations

import re
from pathlib import Path

from k8s_runbooks.chatops.settings import ChatOpsSettings
from k8s_runbooks.flags.settings import FlagSettings
from k8s_runbooks.sandbox.localchat.component import LocalChatSettings
from k8s_runbooks.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_table_with_its_description() -> None:
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]  # cells between unescaped pipes
        if line.startswith("| `K8S_RUNBOOKS_") and len(cells) == 3:
            rows[cells[0].strip("`")] = cells[2]
    fields = {**Settings.model_fields, **ChatOpsSettings.model_fields, **FlagSettings.model_fields}  # one settings object per concern
    fields.update({f"sandbox_{n}": f for n, f in LocalChatSettings.model_fields.items()})
    missing = [f"K8S_RUNBOOKS_{n.upper()}" for n in fields if f"K8S_RUNBOOKS_{n.upper()}" not in rows]
    assert missing == [], f"settings missing from the README table: {missing}"
    for name, field in fields.items():
        assert field.description, f"{name} has no description"
        assert rows[f"K8S_RUNBOOKS_{name.upper()}"], f"K8S_RUNBOOKS_{name.upper()} has an empty meaning in the README"
