"""Attestation of an approval answer verified by the receiver (Slack signature + allowlist).

The receiver resumes a paused run through the run's own typed form; the form's `approver` field is free text
anyone with Prefect UI access can fill. So the receiver also puts an attestation in the form's `attestation`
field: the verified answer (run, pause, approve, action, approvers) as JSON and an HMAC of it keyed from the
Slack signing secret. The run accepts an answer as verified only when the attestation checks out and matches
the answer and the pause it waits on; anything else is an unverified (Prefect UI) answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

_CONTEXT = b"k8s-runbooks approval attestation v1"


@dataclass(frozen=True)
class Approver:
    id: str
    name: str

    def label(self) -> str:
        return f"{self.name} (Slack {self.id}, verified)" if self.name else f"Slack {self.id} (verified)"


@dataclass(frozen=True)
class Attested:
    run: str
    pause: str
    approve: bool
    action: str | None
    approvers: tuple[Approver, ...]
    at: float


def _key(secret: SecretStr) -> bytes:
    # A key of its own, derived from the signing secret: one secret to set, no signature reusable across uses.
    return hmac.new(secret.get_secret_value().encode(), _CONTEXT, hashlib.sha256).digest()


def attest(secret: SecretStr, answer: Attested) -> str:
    """`<base64url JSON>.<hex HMAC>` for the run's `attestation` field."""
    doc = {"run": answer.run, "pause": answer.pause, "approve": answer.approve, "action": answer.action,
           "approvers": [{"id": a.id, "name": a.name} for a in answer.approvers], "at": answer.at}
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + hmac.new(_key(secret), raw, hashlib.sha256).hexdigest()


def verify(secret: SecretStr | None, token: str) -> Attested | None:
    """The attested answer, or None when the token is empty, malformed or not signed with our key."""
    if secret is None or not token or token.count(".") != 1:
        return None
    body, mac = token.split(".")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, TypeError):
        return None
    if not hmac.compare_digest(mac.encode(), hmac.new(_key(secret), raw, hashlib.sha256).hexdigest().encode()):
        return None
    try:
        doc: dict[str, Any] = json.loads(raw)
        return Attested(run=str(doc["run"]), pause=str(doc["pause"]), approve=bool(doc["approve"]),
                        action=None if doc["action"] is None else str(doc["action"]),
                        approvers=tuple(Approver(str(a["id"]), str(a["name"])) for a in doc["approvers"]),
                        at=float(doc["at"]))
    except (ValueError, KeyError, TypeError):
        return None
