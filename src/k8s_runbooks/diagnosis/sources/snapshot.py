"""Snapshots: the evidence of an incident as versioned, redacted JSON, replayable offline
(`k8s-runbooks diagnose --snapshot FILE`) so a post-mortem's root cause can be re-derived later."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from k8s_runbooks.diagnosis.evidence import SNAPSHOT_VERSION, Evidence
from k8s_runbooks.diagnosis.sources.redaction import redact_evidence
from k8s_runbooks.errors import InvalidInput

KIND = "k8s-runbooks/snapshot"
MAX_SNAPSHOT_BYTES = 64 * 2**20


def snapshot_document(evidence: Evidence, symptom: str = "", service: str | None = None) -> dict[str, Any]:
    """The snapshot as a JSON-ready dict (redacted again here: a snapshot leaves the process)."""
    evidence = evidence.model_copy(deep=True)
    redact_evidence(evidence)
    return {"kind": KIND, "version": SNAPSHOT_VERSION, "captured_at": datetime.now(timezone.utc).isoformat(),
            "symptom": symptom, "service": service, "evidence": evidence.model_dump(mode="json")}


def write_snapshot(path: Path, evidence: Evidence, symptom: str = "", service: str | None = None) -> int:
    text = json.dumps(snapshot_document(evidence, symptom, service), indent=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return len(text)


def parse_snapshot(data: Any, where: str = "snapshot") -> tuple[Evidence, str]:
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise InvalidInput(f"{where} is not a k8s-runbooks snapshot (no \"kind\": \"{KIND}\")")
    version = data.get("version")
    if version != SNAPSHOT_VERSION:
        raise InvalidInput(f"{where} has snapshot version {version!r}; this k8s-runbooks reads version {SNAPSHOT_VERSION}")
    try:
        evidence = Evidence.model_validate(data.get("evidence"))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        raise InvalidInput(f"{where} has invalid evidence at {loc or 'top level'}: {first.get('msg')}") from None
    redact_evidence(evidence)  # a snapshot written by hand may hold what ours never would
    symptom = data.get("symptom")
    return evidence, symptom if isinstance(symptom, str) else ""


def read_snapshot(path: Path) -> tuple[Evidence, str]:
    try:
        if path.stat().st_size > MAX_SNAPSHOT_BYTES:
            raise InvalidInput(f"{path} is larger than {MAX_SNAPSHOT_BYTES // 2**20} MB")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"snapshot {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read snapshot {path}: {exc}") from None
    except ValueError as exc:
        raise InvalidInput(f"snapshot {path} is not valid JSON: {exc}") from None
    return parse_snapshot(data, str(path))
