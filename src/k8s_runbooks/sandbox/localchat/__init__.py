"""A local Slack and PagerDuty for the sandbox (and the tests): the Slack Web API methods k8s-runbooks calls,
interaction requests built and signed as Slack builds and signs them, and the PagerDuty Events API v2.
The product never imports this; it only gets its URLs."""
