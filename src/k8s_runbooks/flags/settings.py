"""Settings of the feature-flag provider (`K8S_RUNBOOKS_<FIELD>`): which provider turns a workload's flags off."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FlagSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="K8S_RUNBOOKS_", extra="ignore")

    flag_provider: str = Field(
        default="configmap",
        pattern=r"^(configmap|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$",
        description="Where feature flags live: `configmap` (a ConfigMap in the workload's namespace, key = flag, "
                    "value on|off), or `package.module:factory` returning your own FlagProvider (e.g. an HTTP flag service).",
    )
    flag_configmap: str = Field(
        default="feature-flags", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253,
        description="Name of the ConfigMap the `configmap` flag provider reads and patches.",
    )


@lru_cache(maxsize=1)
def get_flag_settings() -> FlagSettings:
    return FlagSettings()
