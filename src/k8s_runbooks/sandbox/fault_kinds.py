"""The shop workload's fault kinds live in the core (`k8s_runbooks.drills.fault_kinds`: drills inject them in
any cluster); the sandbox's CLI and workload import them from here as before."""

from k8s_runbooks.drills.fault_kinds import FAULT_KINDS, FAULT_VARS, FAULTS

__all__ = ["FAULTS", "FAULT_VARS", "FAULT_KINDS"]
