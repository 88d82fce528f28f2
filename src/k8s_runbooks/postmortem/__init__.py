"""Post-mortems assembled from a flow run (states, artifacts, audit records) and rendered last.

Reading a run from Prefect is k8s_runbooks_prefect.postmortem.assemble; the model, analysis and render live here."""

from k8s_runbooks.postmortem.model import ChartRef, EvidenceItem, PostMortem, RunRecord

__all__ = ["ChartRef", "EvidenceItem", "PostMortem", "RunRecord"]
