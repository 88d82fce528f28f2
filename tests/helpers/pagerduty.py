"""A local PagerDuty Events API v2 in a thread, for tests: the sandbox's own implementation
(k8s_runbooks.sandbox.localchat.pagerduty) on a free port. `events` (as received), `open` (dedup key -> trigger
event), `incidents` (what a person sees), `fail_next` (statuses to answer next)."""

from __future__ import annotations

from k8s_runbooks.sandbox.localchat.pagerduty import PagerDutyEvents
from tests.helpers.http_receiver import LocalHTTPServer


class LocalPagerDuty(PagerDutyEvents, LocalHTTPServer):
    def __init__(self, routing_keys: set[str]) -> None:
        PagerDutyEvents.__init__(self, routing_keys)
        LocalHTTPServer.__init__(self, self.handle)
        self.url = f"{self.base_url}/v2/enqueue"
