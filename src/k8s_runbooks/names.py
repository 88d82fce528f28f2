"""The names parameters may carry, as the Kubernetes API server validates them: one definition for every
parameter model (runbooks, drills), so a value accepted by one is accepted by all.

Patterns are ASCII and anchored (pydantic matches them against the whole string), so no accepted value can carry
label-selector, PromQL or Markdown syntax.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

# RFC 1123 label (namespaces) and subdomain (deployment names).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Kubeconfig context names are free-form; this admits the usual ones (gke_project_region_name, kind-x,
# arn:aws:eks:region:acct:cluster/name, user@cluster) and nothing that could smuggle quotes or whitespace.
KUBE_CONTEXT = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,252}$"


def kube_context_field() -> Any:
    return Field(
        None, pattern=KUBE_CONTEXT, max_length=253,
        description="Kubeconfig context of the cluster to act on, so one installation serves several clusters. "
        "Empty: the installation's default (K8S_RUNBOOKS_KUBE_CONTEXT, else the kubeconfig's current context).",
    )
