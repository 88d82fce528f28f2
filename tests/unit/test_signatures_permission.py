"""Which log lines read as a volume permission fault: a denial on a file, not an application's authorisation error."""

from __future__ import annotations

import pytest

from k8s_runbooks.diagnosis.signatures.startup import _PERMISSION


@pytest.mark.parametrize("line", [
    "1:M 10 Jan 2026 09:11:41.089 # Fatal error: can't open the RDB file dump.rdb for reading: Permission denied",
    "Error: EACCES: permission denied, mkdir '/data/cache'",
    "nginx: [emerg] open() \"/var/log/nginx/error.log\" failed (13: Permission denied)",
    "touch: /var/lib/app/lock: Permission denied",
    "PermissionError: [Errno 13] Permission denied: '/data/state.json'",
    "chown: changing ownership of '/data': Operation not permitted",
    "mkdir: cannot create directory '/var/lib/mysql': Read-only file system".replace("Read-only", "read-only"),
])
def test_a_denial_on_a_file_is_a_permission_fault(line: str) -> None:
    assert _PERMISSION.search(line), line


@pytest.mark.parametrize("line", [
    "vault: permission denied for hvs.VaultCanary0033CAESIJabcdefghijklmnopqrst",
    "ERROR:  permission denied for table orders",
    "pq: permission denied for schema public",
    "rpc error: code = PermissionDenied desc = caller lacks scope payments.write",
    "panic: checkout cannot reach the ledger",
])
def test_an_application_authorisation_error_is_not(line: str) -> None:
    assert not _PERMISSION.search(line), line
