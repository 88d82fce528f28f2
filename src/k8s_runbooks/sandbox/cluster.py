"""The sandbox cluster process: object store + API server (+ the runtime: controllers, kubelet, metrics).

    python -m k8s_runbooks.sandbox.cluster --state-dir D --port P [--pod-subnet 127.1] [--no-runtime]
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from k8s_runbooks.sandbox.apiserver import ApiServer
from k8s_runbooks.sandbox.kubeconfig import write_kubeconfig
from k8s_runbooks.sandbox.store import Store

log = logging.getLogger("k8s_runbooks.sandbox.cluster")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public")


def new_store() -> Store:
    store = Store()
    for ns in SYSTEM_NAMESPACES:
        store.create("namespaces", {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}})
    return store


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m k8s_runbooks.sandbox.cluster", description=__doc__)
    p.add_argument("--state-dir", type=Path, required=True, help="State directory (pids/, pods/, kubeconfig).")
    p.add_argument("--port", type=int, required=True, help="Port of the Kubernetes API on 127.0.0.1.")
    p.add_argument("--pod-subnet", default="127.1", help="First two octets of pod IPs (default 127.1).")
    p.add_argument("--no-runtime", action="store_true", help="API server only: no controllers, kubelet or metrics.")
    p.add_argument("--log-level", default=os.environ.get("K8S_RUNBOOKS_SANDBOX_LOG_LEVEL", "INFO"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state_dir: Path = args.state_dir.resolve()
    store = new_store()
    try:
        api = ApiServer(store, "127.0.0.1", args.port, state_dir=state_dir)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"error: port {args.port} on 127.0.0.1 is already in use; choose another port for the sandbox API "
                  "with K8S_RUNBOOKS_SANDBOX_API_PORT", file=sys.stderr)
        else:
            print(f"error: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    (state_dir / "pids").mkdir(parents=True, exist_ok=True)
    pid_file = state_dir / "pids" / "cluster.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    write_kubeconfig(state_dir / "kubeconfig", api.url)

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received signal %d, stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    runtime = None
    api.start()
    try:
        if not args.no_runtime:
            try:
                from k8s_runbooks.sandbox.runtime import start_runtime  # lazy: --no-runtime works without it

                runtime = start_runtime(store, api, state_dir=state_dir, api_url=api.url, pod_subnet=args.pod_subnet)
            except Exception as exc:  # noqa: BLE001 - report in one line (details in the log) and exit non-zero
                log.debug("runtime start failed", exc_info=True)
                print(f"error: the sandbox runtime failed to start: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
        log.info("sandbox API listening on %s (state dir %s)", api.url, state_dir)
        print(f"sandbox API listening on {api.url}", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        if runtime is not None:
            try:
                runtime.stop()
            except Exception:  # noqa: BLE001 - shutting down: report and go on stopping the API
                log.exception("error while stopping the runtime")
        api.stop()
        store.close()
        try:
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
