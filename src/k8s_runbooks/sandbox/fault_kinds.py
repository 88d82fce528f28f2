"""The fault kinds of `k8s-runbooks sandbox fault` live in the core (`k8s_runbooks.drills.fault_kinds`: drills
inject them in any cluster); the sandbox's CLI and workload import them from here as before."""

from k8s_runbooks.drills.fault_kinds import CLUSTER_FAULTS, FAULT_KINDS, FAULT_VARS, FAULTS

__all__ = ["FAULTS", "FAULT_VARS", "FAULT_KINDS", "CLUSTER_FAULTS"]
