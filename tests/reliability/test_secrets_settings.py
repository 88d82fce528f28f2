"""Settings never print a secret: every credential-like setting is a SecretStr, and repr / str / JSON dumps
(what a log line, a traceback or `print(settings)` shows) mask them all."""

from __future__ import annotations

import re
from typing import get_args

import pytest
from pydantic import SecretStr

from k8s_runbooks.chatops.settings import ChatOpsSettings
from k8s_runbooks.settings import Settings

CREDENTIAL = re.compile(r"token|password|secret|dsn|webhook_url|api_key|private_key", re.I)
# The *name* of a Prefect Secret block, and the sandbox Alertmanager's URL of the local receiver: not secrets.
NOT_CREDENTIALS = {"sentry_token_block", "sandbox_alert_webhook_url"}


CLASSES = [Settings, ChatOpsSettings]
# Credentials named otherwise: the PagerDuty integration keys.
ALSO_CREDENTIALS = {"pagerduty_routing_key", "pagerduty_secondary_routing_key"}


def _credential_fields(cls: type = Settings) -> list[str]:
    return [name for name in cls.model_fields
            if (CREDENTIAL.search(name) or name in ALSO_CREDENTIALS) and name not in NOT_CREDENTIALS]


@pytest.mark.parametrize("cls", CLASSES)
def test_every_credential_setting_is_a_secret_str(cls: type) -> None:
    fields = _credential_fields(cls)
    assert len(fields) >= 5, fields
    plain = [n for n in fields if SecretStr not in (cls.model_fields[n].annotation, *get_args(cls.model_fields[n].annotation))]
    assert not plain, f"credential settings stored as plain text: {plain}"


@pytest.mark.parametrize("cls", CLASSES)
def test_settings_print_secrets_masked(monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    values = {}
    for i, name in enumerate(_credential_fields(cls)):
        value = f"https://hooks.example/SettingsCanary{i:02d}" if "url" in name or "dsn" in name else f"SettingsCanary{i:02d}x"
        values[name] = value
        monkeypatch.setenv(f"K8S_RUNBOOKS_{name.upper()}", value)
    settings = cls()
    for name, value in values.items():
        got = getattr(settings, name)
        assert isinstance(got, SecretStr) and got.get_secret_value() == value, name  # really loaded
    shown = "\n".join([repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump())])
    leaked = [name for name, value in values.items() if value in shown]
    assert not leaked and "**********" in shown, leaked
