"""Settings of the sandbox (`K8S_RUNBOOKS_SANDBOX_<FIELD>`), apart from the product's (`k8s_runbooks.settings`):
the product image has no sandbox, and no product default points at a sandbox port."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="K8S_RUNBOOKS_SANDBOX_", extra="ignore")

    state_dir: Path = Field(default=Path(".sandbox"), description="State directory of the sandbox cluster.")
    api_port: int = Field(default=16443, description="Port of the sandbox Kubernetes API on 127.0.0.1.")
    prometheus_port: int = Field(default=19090, description="Port of the sandbox Prometheus.")
    alertmanager_port: int = Field(default=19093, description="Port of the sandbox Alertmanager.")
    pushgateway_port: int = Field(default=19091, description="Port of the sandbox Pushgateway.")
    prefect_port: int = Field(default=4200, description="Port of the sandbox Prefect server (API and UI).")
    receiver_port: int = Field(default=18080, description="Port of the alert receiver started by the sandbox.")
    chatops_port: int = Field(
        default=18090, ge=0, le=65535,
        description="Port of the sandbox's local Slack Web API and PagerDuty Events API (component `chatops`; 0: not started).",
    )
    pod_subnet: str = Field(
        default="127.1", pattern=r"^127\.\d{1,3}$",
        description="First two octets of the loopback range pod IPs are taken from (127.X.0.0/16).",
    )
    tools_dir: Path | None = Field(
        default=None,
        description="Where the Prometheus/Alertmanager/Pushgateway binaries are extracted; default <state_dir>/tools/bin.",
    )
    receiver_routes: Path | None = Field(
        default=None,
        description="Routes file of the sandbox's alert receiver; default deployments/alert-routes.sandbox.yaml.",
    )
    alert_webhook_url: str | None = Field(
        default=None,
        description="Where the sandbox Alertmanager sends notifications; default is the sandbox alert receiver.",
    )
    prefect_database: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description="Database of the sandbox's Prefect server: sqlite (D/prefect/prefect.db) or postgres (a local "
                    "cluster from Debian's postgresql package, started as the sandbox component `postgres`).",
    )
    postgres_port: int = Field(default=15432, description="Port of the sandbox Postgres (with prefect_database=postgres).")
