"""Feature flags as a containment option: turning off the flag a faulty code path sits behind.

A workload declares the flags it reads in the annotation `k8s-runbooks.io/feature-flags` (comma-separated);
only declared flags are ever changed. Where the flags live is a `FlagProvider`: the built-in one is a ConfigMap
in the workload's namespace (`configmap`, key = flag, value `on`/`off`); `K8S_RUNBOOKS_FLAG_PROVIDER=
package.module:factory` plugs in another (an HTTP flag service, ...): `factory(kube)` returns the provider.
Changes go through the guard (ActionKind.set_flags) like every other change.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from k8s_runbooks.errors import ConfigError, InvalidInput
from k8s_runbooks.flags.settings import FlagSettings, get_flag_settings

FLAGS_ANNOTATION = "k8s-runbooks.io/feature-flags"
VALUES = ("on", "off")


@runtime_checkable
class FlagProvider(Protocol):
    """Reads and sets the feature flags of a namespace. `where` names the store for people (audit, plan)."""

    def where(self, namespace: str) -> str: ...

    def read(self, namespace: str, flags: list[str]) -> dict[str, str | None]:
        """Current value of each flag (`on`/`off`, None when the store does not hold it)."""
        ...

    def set(self, namespace: str, values: dict[str, str]) -> str:
        """Set the flags; returns what changed, in words (the audit's outcome)."""
        ...


def declared_flags(annotations: dict[str, str] | None) -> list[str]:
    """The flags a workload declares it reads (its `k8s-runbooks.io/feature-flags` annotation), in order."""
    raw = (annotations or {}).get(FLAGS_ANNOTATION, "")
    return list(dict.fromkeys(f.strip() for f in raw.split(",") if f.strip()))


def check_values(values: Any, declared: list[str]) -> dict[str, str]:
    """`{"flag": "on"|"off"}` limited to the declared flags; InvalidInput otherwise."""
    if not isinstance(values, dict) or not values:
        raise InvalidInput("set_flags needs patch={'flags': {'<flag>': 'off'}}")
    unknown = sorted(str(k) for k in values if k not in declared)
    if unknown:
        raise InvalidInput(f"flags {', '.join(unknown)} are not declared by the workload (annotation {FLAGS_ANNOTATION}: "
                           f"{', '.join(declared) or 'none'})")
    bad = sorted(f"{k}={v}" for k, v in values.items() if v not in VALUES)
    if bad:
        raise InvalidInput(f"flag values must be on or off: {', '.join(bad)}")
    return {str(k): str(v) for k, v in values.items()}


def get_flag_provider(kube: Any, settings: FlagSettings | None = None) -> FlagProvider:
    """The provider the settings name: `configmap`, or `package.module:factory` called with the Kube client."""
    s = settings or get_flag_settings()
    if s.flag_provider == "configmap":
        from k8s_runbooks.flags.configmap import ConfigMapFlags

        return ConfigMapFlags(kube, s.flag_configmap)
    module, _, name = s.flag_provider.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"K8S_RUNBOOKS_FLAG_PROVIDER={s.flag_provider}: cannot load it ({exc})",
                          hint="use `configmap` or `package.module:factory` importable by the runbook's Python") from exc
    provider = factory(kube)
    if not isinstance(provider, FlagProvider):
        raise ConfigError(f"K8S_RUNBOOKS_FLAG_PROVIDER={s.flag_provider} returned {type(provider).__name__}, which lacks "
                          "where/read/set")
    return provider
