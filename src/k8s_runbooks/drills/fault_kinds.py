"""The demo workload's fault kinds: each one an env var of the shop container (set as a rollout) and its default.
Its own module so the CLI can list them without importing the Kubernetes client; the core (drills) and the
sandbox (its CLI and the shop image) share it."""

from __future__ import annotations

# fault kind -> (env var, default value)
FAULTS: dict[str, tuple[str, str]] = {
    "crash": ("FAULT_CRASH_AFTER_S", "2"),
    "latency": ("FAULT_LATENCY_MS", "800"),
    "oom": ("FAULT_LEAK_MB_PER_S", "64"),
    "errors": ("FAULT_ERROR_RATE", "0.5"),
    "cpu": ("FAULT_CPU_BURN", "1.0"),
}
FAULT_VARS = [var for var, _ in FAULTS.values()] + ["FAULT_MESSAGE"]
FAULT_KINDS = [*FAULTS, "clear"]
