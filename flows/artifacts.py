"""Artifacts with stable keys (`<flow>-<step>-<what>`), redacted text, and the runbook progress bar."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from k8s_runbooks.redact import redact

_KEY_OK = re.compile(r"^[a-z0-9-]+$")


def artifact_key(*parts: str) -> str:
    """Prefect keys allow lowercase letters, digits and dashes only."""
    key = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")
    if not _KEY_OK.match(key):
        raise ValueError(f"cannot build an artifact key from {parts!r}")
    return key


def clean(text: Any) -> str:
    """Redact secrets from anything before it is published (logs are already redacted by the task)."""
    return redact(str(text))[0]


def publish_markdown(key: str, markdown: str, description: str = "") -> UUID:
    return create_markdown_artifact(markdown=clean(markdown), key=artifact_key(key), description=clean(description) or None)


def publish_raw_markdown(key: str, markdown: str, description: str = "") -> UUID:
    """For text already redacted field by field (the JSON run record), where a second pass could break syntax."""
    return create_markdown_artifact(markdown=markdown, key=artifact_key(key), description=description or None)


def publish_table(key: str, rows: list[dict[str, Any]], description: str = "") -> UUID:
    safe = [{k: clean(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    return create_table_artifact(table=safe, key=artifact_key(key), description=clean(description) or None)


def publish_link(key: str, link: str, text: str, description: str = "") -> UUID:
    return create_link_artifact(link=clean(link), link_text=clean(text), key=artifact_key(key), description=clean(description) or None)


class Progress:
    """One progress artifact tracking the runbook's steps (0-100 %)."""

    def __init__(self, key: str, step_ids: list[str]) -> None:
        self.step_ids = step_ids
        self.done: list[str] = []
        self.artifact_id = create_progress_artifact(progress=0.0, key=artifact_key(key), description=self._describe(None))

    def _describe(self, current: str | None) -> str:
        marks = []
        for s in self.step_ids:
            mark = "x" if s in self.done else (">" if s == current else " ")
            marks.append(f"[{mark}] {s}")
        return "Runbook steps: " + "  ".join(marks)

    def start(self, step_id: str) -> None:
        update_progress_artifact(self.artifact_id, progress=self._percent(), description=self._describe(step_id))

    def finish(self, step_id: str) -> None:
        if step_id not in self.done:
            self.done.append(step_id)
        update_progress_artifact(self.artifact_id, progress=self._percent(), description=self._describe(None))

    def _percent(self) -> float:
        return round(100.0 * len(self.done) / max(1, len(self.step_ids)), 1)
