"""The fault kinds: the demo workload's env-var faults (each an env var of the shop container, set as a rollout,
and its default) and the cluster faults (a person's mistake in the cluster's own objects).
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

# cluster fault kind -> the mistake it reproduces (k8s_runbooks.drills.cluster_faults makes each one)
CLUSTER_FAULTS: dict[str, str] = {
    "missing-secret": "the container reads DB_PASSWORD from a Secret that does not exist (CreateContainerConfigError)",
    "image-not-found": "a typo in the image tag (ErrImagePull, then ImagePullBackOff)",
    "node-selector": "the pod template asks for nodes labelled disktype=ssd; none is (FailedScheduling)",
    "taint": "every node tainted dedicated=maintenance:NoSchedule, then the deployment restarted (FailedScheduling)",
    "quota": "a ResourceQuota 'compute-quota' capping requests.cpu at what the namespace uses, then a restart (FailedCreate)",
    "liveness-port": "a liveness probe on a port nothing listens on (Unhealthy, Killing, restarts)",
    "readiness-port": "the readiness probe moved to a port nothing listens on (pods never Ready)",
    "service-selector": "a typo in the Service selector (no endpoints, requests fail)",
    "zero-replicas": "the deployment scaled to 0 replicas",
}
FAULT_KINDS = [*FAULTS, *CLUSTER_FAULTS, "clear"]
