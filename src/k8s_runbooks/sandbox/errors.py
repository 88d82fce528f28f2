"""API errors of the sandbox server, rendered as Kubernetes `Status` objects."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    @classmethod
    def not_found(cls, resource: str, name: str, group: str = "") -> "ApiError":
        res = f"{resource}.{group}" if group else resource
        return cls(404, "NotFound", f'{res} "{name}" not found',
                   {"name": name, "group": group, "kind": resource} if group else {"name": name, "kind": resource})

    @classmethod
    def already_exists(cls, resource: str, name: str, group: str = "") -> "ApiError":
        res = f"{resource}.{group}" if group else resource
        return cls(409, "AlreadyExists", f'{res} "{name}" already exists', {"name": name, "group": group, "kind": resource})

    @classmethod
    def conflict(cls, resource: str, name: str, group: str = "") -> "ApiError":
        res = f"{resource}.{group}" if group else resource
        return cls(409, "Conflict",
                   f'Operation cannot be fulfilled on {res} "{name}": the object has been modified; '
                   "please apply your changes to the latest version and try again",
                   {"name": name, "group": group, "kind": resource})

    @classmethod
    def invalid(cls, kind: str, name: str, causes: list[tuple[str, str]]) -> "ApiError":
        msg = "; ".join(f"{field}: {why}" for field, why in causes)
        return cls(422, "Invalid", f'{kind} "{name}" is invalid: {msg}',
                   {"name": name, "kind": kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": why, "field": field} for field, why in causes]})

    @classmethod
    def bad_request(cls, message: str) -> "ApiError":
        return cls(400, "BadRequest", message)

    @classmethod
    def gone(cls, message: str) -> "ApiError":
        return cls(410, "Expired", message)

    @classmethod
    def method_not_allowed(cls, message: str = "the server does not allow this method on the requested resource") -> "ApiError":
        return cls(405, "MethodNotAllowed", message)
