"""Post-mortems assembled from a flow run (states, artifacts, audit records) and rendered last."""

from k8s_runbooks.postmortem.model import ChartRef, EvidenceItem, PostMortem, RunRecord

__all__ = ["ChartRef", "EvidenceItem", "PostMortem", "RunRecord"]
