"""Prometheus metrics of the receiver (one registry per app, so several apps can live in one test process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "k8s_runbooks_receiver"


class ReceiverMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "Webhook requests by source and HTTP status code.",
                                ["source", "code"], registry=r)
        self.received = Counter(f"{PREFIX}_alerts_received", "Alerts received by source and alert status.",
                                ["source", "status"], registry=r)
        self.deduplicated = Counter(f"{PREFIX}_alerts_deduplicated", "Repeated notifications of an alert already spooled.",
                                    ["source"], registry=r)
        self.ignored = Counter(f"{PREFIX}_alerts_ignored", "Firing alerts no route matched.", ["source"], registry=r)
        self.rejected = Counter(f"{PREFIX}_alerts_rejected", "Routed alerts with unsafe or missing label values.",
                                ["source"], registry=r)
        self.runs_created = Counter(f"{PREFIX}_flow_runs_created", "Flow runs created from alerts.", ["deployment"], registry=r)
        self.dispatch_failures = Counter(f"{PREFIX}_dispatch_failures",
                                         "Failed dispatch attempts (transient: retried; permanent: row failed).",
                                         ["kind"], registry=r)
        self.runs_cancelled = Counter(f"{PREFIX}_flow_runs_cancelled",
                                      "Flow runs cancelled because their alerts resolved while the runs waited "
                                      "(not started, paused for approval) or were being created.",
                                      registry=r)
        self.alerts_joined = Counter(f"{PREFIX}_alerts_joined",
                                     "Firing alerts that joined the active incident run of their workload instead of "
                                     "creating a run.", ["source"], registry=r)
        self.resolved_kept = Counter(f"{PREFIX}_resolved_incident_kept",
                                     "Resolved alerts whose incident run was kept: another alert of the incident still fires.",
                                     registry=r)
        self.events_emitted = Counter(f"{PREFIX}_events_emitted", "Prefect events emitted.", registry=r)
        self.dispatch_latency = Histogram(
            f"{PREFIX}_dispatch_latency_seconds", "From alert accepted to flow run created.", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
        )
        self.ack_latency = Histogram(
            f"{PREFIX}_request_duration_seconds", "Webhook handling time inside the app (parse, auth, spool commit).",
            ["source"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
        )
        self.spool_depth = Gauge(f"{PREFIX}_spool_depth", "Alerts accepted and waiting for their flow run.", registry=r)
        self.outbox_depth = Gauge(f"{PREFIX}_event_outbox_depth", "Prefect events waiting to be emitted.", registry=r)
        self.incident_tables_behind = Gauge(f"{PREFIX}_incident_tables_behind",
                                            "Incident runs whose alert table artifact does not show the latest join or "
                                            "resolution yet.", registry=r)

    def bind_depth(self, pending: Callable[[], int], outbox: Callable[[], int],
                   unrecorded: Callable[[], int] | None = None) -> None:
        self.spool_depth.set_function(pending)
        self.outbox_depth.set_function(outbox)
        if unrecorded is not None:
            self.incident_tables_behind.set_function(unrecorded)
