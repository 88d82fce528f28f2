"""A real Prometheus (Debian package binary) serving deterministic backfilled history.

Binaries come from `k8s_runbooks.sandbox.binaries.ensure_binaries` (apt-get download + dpkg-deb -x into a
cache dir) so the tests work on a fresh machine. History is written with `promtool tsdb
create-blocks-from openmetrics`, ending 3 h before now: older than the head block, well within the
default 15 d retention. Tests query at the fixed time `end` inside that range.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers.http_receiver import free_port
from tests.prom.history import openmetrics

CACHE_DIR = Path(os.environ.get("K8S_RUNBOOKS_TEST_CACHE", Path.home() / ".cache" / "k8s-runbooks-tests"))


@dataclass
class RunningPrometheus:
    url: str
    end: int  # unix seconds: the last backfilled sample; evaluate queries here
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def prom_binaries() -> dict[str, Path]:
    try:
        from k8s_runbooks.sandbox.binaries import ensure_binaries
    except ImportError:  # the sandbox module is not there: do the same apt-get download + dpkg-deb -x here
        return _extract_prometheus(CACHE_DIR / "tools" / "bin")
    return ensure_binaries(CACHE_DIR, names=("prometheus", "promtool"))


def _extract_prometheus(bin_dir: Path) -> dict[str, Path]:
    wanted = {name: bin_dir / name for name in ("prometheus", "promtool")}
    if not all(p.exists() for p in wanted.values()):
        debs = bin_dir.parent / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        if not list(debs.glob("prometheus_*.deb")):
            subprocess.run(["apt-get", "download", "prometheus"], cwd=debs, check=True, capture_output=True, timeout=600)
        root = bin_dir.parent / "root"
        subprocess.run(["dpkg-deb", "-x", str(next(debs.glob("prometheus_*.deb"))), str(root)], check=True, timeout=120)
        bin_dir.mkdir(parents=True, exist_ok=True)
        for name, target in wanted.items():
            os.replace(root / "usr" / "bin" / name, target)
    return wanted


def start_prometheus(binary: Path, data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = data_dir.parent / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1h\n")
    last_error = ""
    for _ in range(3):  # another test may grab the port between free_port() and bind
        port = free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(binary), f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        stop(proc)
        last_error = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"Prometheus did not become ready:\n{last_error}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def prometheus(prom_binaries: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPrometheus]:
    root = tmp_path_factory.mktemp("prometheus")
    end = (int(time.time()) - 3 * 3600) // 60 * 60
    history = root / "history.om"
    history.write_text(openmetrics(end))
    data_dir = root / "data"
    subprocess.run(
        [str(prom_binaries["promtool"]), "tsdb", "create-blocks-from", "openmetrics", str(history), str(data_dir)],
        check=True, capture_output=True, timeout=120,
    )
    proc, url = start_prometheus(prom_binaries["prometheus"], data_dir, root / "prometheus.log")
    try:
        yield RunningPrometheus(url=url, end=end, process=proc)
    finally:
        stop(proc)
