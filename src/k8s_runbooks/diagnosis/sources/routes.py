"""Routing rules from where they live: a gateway's configuration file inside a ConfigMap (Spring Cloud Gateway
`spring.cloud.gateway.routes`), and Kubernetes Ingress objects."""

from __future__ import annotations

import re
from typing import Any

import yaml

from k8s_runbooks.diagnosis.evidence import Route

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLACEHOLDER = re.compile(r"\$\{[^}:]*:(?P<default>[^}]*)\}")


def _host_port(uri: str) -> tuple[str, int | None]:
    uri = _PLACEHOLDER.sub(lambda m: m.group("default"), uri)
    rest = re.sub(r"^[\w+.-]+://", "", uri).split("/", 1)[0]
    host, _, port = rest.partition(":")
    return host, int(port) if port.isdigit() else None


def _dig(doc: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def config_map_routes(name: str, data: dict[str, Any]) -> list[Route]:
    """Routes in any YAML value of a ConfigMap that configures a Spring Cloud Gateway."""
    out: list[Route] = []
    for key, text in (data or {}).items():
        if not isinstance(text, str) or "routes" not in text:
            continue
        try:
            doc = yaml.load(text, Loader=_LOADER)
        except yaml.YAMLError:
            continue
        for r in _dig(doc, "spring", "cloud", "gateway", "routes") or []:
            if not isinstance(r, dict) or not r.get("uri"):
                continue
            paths = [str(p).split("=", 1)[1] for p in r.get("predicates") or [] if str(p).startswith("Path=")]
            host, port = _host_port(str(r["uri"]))
            out.append(Route(source=f"configmap/{name} {key}", id=str(r.get("id", "")), paths=paths, target=host, port=port))
    return out


def ingress_routes(obj: dict[str, Any]) -> list[Route]:
    name = str(_dig(obj, "metadata", "name") or "")
    out = []
    for rule in _dig(obj, "spec", "rules") or []:
        for p in _dig(rule, "http", "paths") or []:
            svc = _dig(p, "backend", "service") or {}
            if svc.get("name"):
                port = _dig(svc, "port", "number")
                out.append(Route(source=f"ingress/{name}", id=str(rule.get("host") or ""), paths=[str(p.get("path") or "/")],
                                 target=str(svc["name"]), port=int(port) if isinstance(port, int) else None))
    return out
