"""Post-mortems assembled from a flow run (states, artifacts, audit records) and rendered last."""

from k8s_runbooks.postmortem.model import EvidenceItem, PostMortem, RunRecord

__all__ = ["EvidenceItem", "PostMortem", "RunRecord"]
