"""The product's settings. Every field is read from `K8S_RUNBOOKS_<FIELD>` (upper case).

Defaults are the usual ports of each service (Prometheus 9090, Alertmanager 9093, Pushgateway 9091, the
receiver 8080), never the sandbox's: the sandbox has its own settings (`k8s_runbooks.sandbox.settings`,
`K8S_RUNBOOKS_SANDBOX_*`) and hands its URLs to the processes it starts (`k8s-runbooks sandbox env`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="K8S_RUNBOOKS_", extra="ignore")

    # --- Kubernetes -------------------------------------------------------------------------
    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig file to use; falls back to $KUBECONFIG, then ~/.kube/config, then in-cluster config.",
    )
    kube_context: str | None = Field(default=None, description="Kubeconfig context; default is the current context.")
    kube_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of every Kubernetes API request (connect + read), seconds."
    )

    # --- Prometheus / Alertmanager -----------------------------------------------------------
    prometheus_url: str = Field(default="http://127.0.0.1:9090", description="Base URL of the Prometheus HTTP API.")
    alertmanager_url: str = Field(default="http://127.0.0.1:9093", description="Base URL of Alertmanager.")
    pushgateway_url: str = Field(default="http://127.0.0.1:9091", description="Base URL of the Pushgateway (drill metrics).")
    http_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of every HTTP call to Prometheus, Alertmanager, Sentry and webhooks, seconds."
    )

    # --- Sentry ------------------------------------------------------------------------------
    sentry_dsn: SecretStr | None = Field(default=None, description="DSN used to report runbook failures through sentry-sdk.")
    sentry_api_url: str = Field(default="https://sentry.io/api/0", description="Sentry Web API base URL (issue look-ups).")
    sentry_token: SecretStr | None = Field(
        default=None, description="Sentry auth token for issue look-ups (or a Prefect Secret block named by sentry_token_block)."
    )
    sentry_token_block: str | None = Field(default=None, description="Name of a Prefect Secret block holding the Sentry token.")
    sentry_org: str | None = Field(default=None, description="Sentry organisation slug.")
    sentry_project: str | None = Field(default=None, description="Sentry project slug (defaults to the service name).")

    # --- Notifications -----------------------------------------------------------------------
    notify_webhook_url: SecretStr | None = Field(
        default=None, description="Slack-compatible incoming webhook for status updates and escalations (unset: artifacts only)."
    )

    # --- Guardrails --------------------------------------------------------------------------
    protected_namespaces: list[str] = Field(
        default_factory=lambda: ["kube-system", "kube-public", "kube-node-lease"],
        description="Namespaces where no destructive action is ever taken.",
    )
    max_pods_per_action: int = Field(default=5, ge=1, description="Blast radius: pods one action may touch.")
    max_pods_per_run: int = Field(default=10, ge=1, description="Blast radius: pods one flow run may touch in total.")
    cooldown_seconds: float = Field(
        default=300.0, ge=0, description="Minimum time between two destructive actions on the same target."
    )
    state_dir: Path = Field(
        default=Path(".k8s-runbooks"),
        description="Where the audit log is kept (JSON lines); cooldowns and run budgets live in the cluster (Leases).",
    )
    reports_dir: Path = Field(default=Path("reports"), description="Where post-mortems are written as files.")

    # --- Runbook runner (`python -m k8s_runbooks_prefect.deploy serve`, started by `sandbox up`) -------
    runner_mode: Literal["warm", "stock"] = Field(
        default="warm",
        description="warm: runs are forks of a pre-imported fork server (start in ms, see warm_runner/); "
                    "stock: Prefect's Runner spawning `python -m prefect.engine` per run (~1 s+ more per start).",
    )
    runner_query_seconds: float = Field(
        default=1.0, gt=0,
        description="How often the runner polls for scheduled runs (Prefect's default is 10 s; lower adds SQLite writers).",
    )
    runner_event_nudge: bool = Field(
        default=True,
        description="Warm runner only: poll at once on a prefect.flow-run.Scheduled event for its deployments.",
    )
    runner_run_pid_dir: Path | None = Field(
        default=None,
        description="Warm runner only: keep `<flow run id>.pid` here while a run's process lives (which process "
                    "to inspect or kill for a run; the runner log names it too). The sandbox uses `D/pids/runs`.",
    )

    # --- Alert receiver ----------------------------------------------------------------------
    receiver_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Base URL of the alert receiver, as senders (Alertmanager, Grafana, Sentry) and tools reach it.",
    )
    receiver_host: str = Field(default="127.0.0.1", description="Address `k8s-runbooks alerts serve` binds to.")
    receiver_port: int = Field(default=8080, ge=1, le=65535, description="Port `k8s-runbooks alerts serve` listens on.")
    receiver_token: SecretStr | None = Field(
        default=None,
        description="Bearer token Alertmanager (http_config.authorization) and Grafana must send; unset: no token check.",
    )
    grafana_basic_user: str | None = Field(
        default=None, description="HTTP basic user Grafana's webhook contact point may send instead of the bearer token."
    )
    grafana_basic_password: SecretStr | None = Field(default=None, description="Password of grafana_basic_user.")
    sentry_hook_secret: SecretStr | None = Field(
        default=None,
        description="Client secret of the Sentry integration; Sentry-Hook-Signature (HMAC-SHA256 of the body) is checked with it.",
    )
    receiver_routes: Path = Field(
        default=Path("deployments/alert-routes.yaml"),
        description="Routing file: label matchers -> Prefect deployment, parameters, approval mode.",
    )
    receiver_spool: Path = Field(
        default=Path(".k8s-runbooks/alert-spool.sqlite3"),
        description="SQLite (WAL) spool where every accepted alert is committed before it is acknowledged.",
    )
    receiver_spool_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="SQLite synchronous mode of the spool: NORMAL survives process kills, FULL also power loss (slower acks).",
    )
    receiver_max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest webhook body accepted; larger ones get HTTP 413."
    )
    receiver_dispatch_backoff_max_seconds: float = Field(
        default=30.0, gt=0, description="Longest wait between dispatch retries while the Prefect API is unavailable."
    )
    receiver_missing_deployment_grace_seconds: float = Field(
        default=300.0, ge=0,
        description="How long alerts for a deployment that is not registered yet are retried before they are marked failed.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
