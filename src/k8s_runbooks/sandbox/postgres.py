"""Postgres as the sandbox Prefect server's database (`K8S_RUNBOOKS_SANDBOX_PREFECT_DATABASE=postgres`), from
Debian's package (`apt-get install postgresql`: the binaries under /usr/lib/postgresql/<version>/bin).

The sandbox runs its own cluster (initdb once, trust auth on 127.0.0.1 only, no Unix socket) on its own port as
a sandbox component like the others (pid file, log, `down`). Postgres refuses to run as root: as root the server
runs as the package's `postgres` user (setpriv, same process: the pid file and `down` still hold), with its data
where that user can reach it (/var/tmp/k8s-runbooks-postgres/<state dir hash>; data dirs whose sandbox state dir
is gone are removed at the next start).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from k8s_runbooks.sandbox.binaries import SandboxError
from k8s_runbooks.sandbox.launchers import Component

PG_ROOT = Path("/usr/lib/postgresql")
ROOT_DATA = Path("/var/tmp/k8s-runbooks-postgres")
DATABASE = "prefect"
INSTALL_HINT = "install Debian's package: apt-get install --no-install-recommends postgresql (as root)"


def bin_dir() -> Path:
    """The newest installed Postgres's bin directory."""
    versions = sorted((p for p in PG_ROOT.glob("*/bin") if (p / "postgres").exists() and (p / "initdb").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not versions:
        raise SandboxError(f"Postgres is not installed (no {PG_ROOT}/<version>/bin/postgres)", hint=INSTALL_HINT)
    return versions[-1]


def _as_postgres() -> list[str]:
    """Command prefix that drops root to the package's `postgres` user (exec, no fork); nothing when not root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise SandboxError("running as root, and there is no `postgres` user to run the server as",
                           hint=INSTALL_HINT + " (it creates the user)") from None
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


def data_dir(state_dir: Path) -> Path:
    state = Path(state_dir).resolve()
    if os.geteuid() != 0:
        return state / "postgres" / "data"
    return ROOT_DATA / hashlib.sha256(str(state).encode()).hexdigest()[:16]


def _prune_orphans() -> None:
    """Data dirs (as root) whose sandbox state dir no longer exists: test sandboxes leave them behind."""
    for d in ROOT_DATA.glob("*"):
        owner = d / "STATE_DIR"
        try:
            gone = owner.exists() and not Path(owner.read_text().strip()).exists()
        except OSError:
            continue
        if gone:
            shutil.rmtree(d, ignore_errors=True)


def ensure_cluster(state_dir: Path) -> Path:
    """initdb the sandbox's cluster once (trust auth, UTF-8); returns its data directory."""
    data = data_dir(state_dir)
    if (data / "PG_VERSION").exists():
        return data
    prefix = _as_postgres()
    if prefix:
        ROOT_DATA.mkdir(mode=0o755, parents=True, exist_ok=True)
        _prune_orphans()
        shutil.rmtree(data, ignore_errors=True)  # a half-made one (initdb wants it empty)
        data.mkdir(mode=0o700)
        shutil.chown(data, "postgres", "postgres")
    else:
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = subprocess.run([*prefix, str(bin_dir() / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                          "-E", "UTF8", "--locale=C.UTF-8"], capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise SandboxError(f"initdb failed: {(out.stderr or out.stdout).strip()[-500:]}")
    if prefix:  # whose it is, for _prune_orphans (Postgres ignores files it does not know)
        (data / "STATE_DIR").write_text(str(Path(state_dir).resolve()))
    return data


def component(state_dir: Path, port: int) -> Component:
    data = ensure_cluster(state_dir)
    return Component(
        name="postgres", port=port, port_setting="K8S_RUNBOOKS_SANDBOX_POSTGRES_PORT",
        url=f"postgresql://127.0.0.1:{port}/{DATABASE}", health_url=f"tcp://127.0.0.1:{port}",
        command=[*_as_postgres(), str(bin_dir() / "postgres"), "-D", str(data), "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                 # Many short Prefect writes from a few processes: commit without waiting for the WAL flush (a crash
                 # loses at most the last moments, never consistency).
                 "-c", "synchronous_commit=off", "-c", "max_connections=200"],
        marker="postgres", timeout_s=60,
    )


def database_url(port: int) -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{DATABASE}"


def ensure_database(port: int) -> None:
    """CREATE DATABASE prefect once the server answers (Prefect's migrations run on its start)."""
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres", timeout=10)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as exc:
        raise SandboxError(f"cannot create database {DATABASE!r} on 127.0.0.1:{port}: {exc}") from exc
