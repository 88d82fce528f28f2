"""A Prefect Runner whose flow runs start in an already-warm interpreter (no ~1 s+ process spawn per run).

Prefect's stock Runner starts every run as `python -m prefect.engine`: a fresh interpreter that imports
Prefect and the flow module before it can propose RUNNING (~1 s on an idle 2-core machine, several seconds
under load). Here a fork server (`multiprocessing`'s "forkserver" context) imports Prefect and every runbook
flow once; each run is a fresh `fork()` of it, so runs stay isolated from each other (own process, own
memory; a crash or SIGKILL takes only that run down) but start in milliseconds.

Everything else is Prefect's own Runner: the poller claims SCHEDULED runs by proposing PENDING (so two
runners never execute the same run), the executor reports a non-zero exit as CRASHED, the cancellation
manager signals the run over the control channel and terminates it, logs go to the API from the run's
process. On top, the runner listens to the server's `prefect.flow-run.Scheduled` events and polls at once
when one concerns its deployments, so a new run does not wait for the next poll; polling stays the fallback.

- `preload`: imported once by the fork server (Prefect's engine and the flow modules).
- `child`: what a forked run executes (the body of `python -m prefect.engine`, without the imports).
- `starter`: the Prefect `ProcessStarter` handing runs to the fork server.
- `runner`: `WarmRunner`, the Runner with that starter and the event nudge.

Which process runs which flow run (a fork's command line and environment do not say): the runner logs
`flow run <id> started in process <pid>` (logger `k8s_runbooks_prefect.warm_runner`, INFO) and, given a `run_pid_dir`
(`--run-pid-dir`, K8S_RUNBOOKS_RUNNER_RUN_PID_DIR; the sandbox's is `D/pids/runs/`), keeps a
`<flow run id>.pid` file there while the process lives.
"""

PRELOAD_ENV = "K8S_RUNBOOKS_WARM_PRELOAD"  # comma-separated flow modules the fork server imports
REPO_ROOT_ENV = "K8S_RUNBOOKS_WARM_REPO_ROOT"  # put on the fork server's sys.path (flows/ lives there)
LOGGER_NAME = "k8s_runbooks_prefect.warm_runner"
