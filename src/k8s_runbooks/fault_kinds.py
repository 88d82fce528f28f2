"""The env-var fault kinds: each one an env var of the workload's container (set as a rollout) and its default.

Product knowledge shared by the drills (core) and the sandbox's shop image (which honours the variables), so it
lives in the core and the sandbox imports it from here. Its own module so the CLI can list the kinds without
importing the Kubernetes client."""

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
