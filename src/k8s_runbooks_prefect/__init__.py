"""The Prefect adapters: the code outside flows/ and tasks/ that talks to Prefect's API or runtime.

The core (`k8s_runbooks`) is Prefect-free and never imports this package; this package imports the core, and
flows/ and the CLI import it. Each module keeps the place it had in the core (`k8s_runbooks.X` ->
`k8s_runbooks_prefect.X`):

- `alerts.dispatcher`: turns spooled alerts into flow runs of their deployments (Prefect client) and events;
- `alerts.server`: the receiver's entry point (`python -m k8s_runbooks_prefect.alerts.server`), wiring the
  core's app to the dispatcher and the Prefect API URL;
- `deploy`: the deployment specs and `python -m k8s_runbooks_prefect.deploy serve|list` (a Prefect Runner);
- `warm_runner`: that Runner's warm process starter;
- `postmortem.assemble`: a PostMortem from a flow run's states and artifacts, read with the Prefect client.
"""
