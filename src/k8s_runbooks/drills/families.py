"""What answers each cluster fault family in production: the alert that fires (rules.yml, kube-state-metrics
series), the runbook deployment its route starts (deployments/alert-routes.yaml), the cause the diagnosis must put
first, and the answer: the guarded action that fixes it, or an escalation whose exact change contains `change`.

The family drills score against this table, and the live end-to-end test and `make bench` check it."""

from __future__ import annotations

from dataclasses import dataclass

ESCALATE = "escalate"


@dataclass(frozen=True)
class FamilyResponse:
    alerts: tuple[str, ...]
    runbook: str  # "<flow>/<deployment>" the route starts
    cause: str  # the diagnosis engine's Cause value
    answer: str  # an ActionKind value, or ESCALATE
    change: str = ""  # escalations: what the exact change contains ({namespace}, {deployment} filled in)

    @property
    def escalates(self) -> bool:
        return self.answer == ESCALATE

    def exact_change(self, namespace: str, deployment: str) -> str:
        return self.change.format(namespace=namespace, deployment=deployment)


INCIDENT = "incident-response/incident-response"
FAMILY_RESPONSES: dict[str, FamilyResponse] = {
    "missing-secret": FamilyResponse(("KubeContainerWaiting",), INCIDENT, "secret-missing", ESCALATE,
                                     "kubectl create secret generic {deployment}-db-credentials -n {namespace}"),
    "image-not-found": FamilyResponse(("KubeContainerWaiting",), INCIDENT, "image-not-found", "rollout_undo"),
    "node-selector": FamilyResponse(("KubePodNotReady",), INCIDENT, "node-selector-unsatisfiable", "rollout_undo"),
    "taint": FamilyResponse(("KubePodNotReady",), INCIDENT, "taint-not-tolerated", ESCALATE, "kubectl taint nodes"),
    "quota": FamilyResponse(("KubeDeploymentRolloutStuck",), INCIDENT, "quota-cpu-exceeded", ESCALATE,
                            "kubectl patch resourcequota compute-quota -n {namespace}"),
    "liveness-port": FamilyResponse(("PodCrashLooping",), "pod-crash/pod-crash", "liveness-probe-wrong-port", "rollout_undo"),
    "readiness-port": FamilyResponse(("KubePodNotReady",), INCIDENT, "readiness-probe-wrong-port", "rollout_undo"),
    "service-selector": FamilyResponse(("KubeServiceWithoutEndpoints",), INCIDENT, "service-selects-no-pods", ESCALATE,
                                       "kubectl patch service {deployment} -n {namespace}"),
    "zero-replicas": FamilyResponse(("KubeServiceWithoutEndpoints",), INCIDENT, "scaled-to-zero", "scale"),
}
