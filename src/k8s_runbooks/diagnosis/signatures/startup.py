"""Startup: the container never runs. The kubelet says why: an image pull failure (its message tells a missing
image from an unreachable registry from refused credentials), a config error naming the missing Secret or
ConfigMap, or the process dies at once on a volume it may not read."""

from __future__ import annotations

import re

from k8s_runbooks.diagnosis.context import Context
from k8s_runbooks.diagnosis.hypothesis import Cause, Fact, Hypothesis

_PULL = re.compile(r'Failed to pull image "(?P<image>[^"]+)"')
_DNS = re.compile(r"no such host|Temporary failure in name resolution|server misbehaving|dial tcp: lookup \S+.*(?:i/o timeout|no such host)")
_AUTH = re.compile(r"failed to authorize|401 Unauthorized|pull access denied|authentication required|unauthorized:|"
                   r"failed to fetch anonymous token|denied: ")
_NOT_FOUND = re.compile(r"code = NotFound|: not found|manifest unknown|repository does not exist|404 Not Found|"
                        r"unexpected status from HEAD request .*(?:403 Forbidden|404)")
_SECRET = re.compile(r'secret "(?P<name>[^"]+)" not found|couldn\'t find key (?P<key>\S+) in Secret (?P<ns>[\w.-]+)/(?P<sname>[\w.-]+)')
_CONFIGMAP = re.compile(r'configmap "(?P<name>[^"]+)" not found|couldn\'t find key (?P<key>\S+) in ConfigMap (?P<ns>[\w.-]+)/(?P<cname>[\w.-]+)')
_PULL_SECRET = re.compile(r"Unable to retrieve some image pull secrets \((?P<names>[^)]*)\)")
# A denial on a file: the line names a path or a file operation. "permission denied for table orders" (Postgres)
# or "vault: permission denied for <token>" are an application's authorisation errors, not a volume's ownership.
_PERMISSION = re.compile(r"(?:/|\bfile\b|\bopen|\bread|\bwrit|\bmkdir|\bcreat|\bchown|\bchmod|\bdirector)[^\n]{0,120}?"
                         r"(?:[Pp]ermission denied(?! for )|Operation not permitted|EACCES)"
                         r"|(?:EACCES|[Pp]ermission denied(?! for ))[^\n]{0,40}?(?:['\"]?/|\b(?:mkdir|open|scandir|unlink|rename)\b)"
                         r"|read-only file system")


def _image_hyps(ctx: Context, wl: str, image: str, message: str, facts: list[Fact], pull_secret_missing: str | None) -> list[Hypothesis]:
    obj = ctx.app(wl)
    registry = image.split("/", 1)[0] if "/" in image and ("." in image.split("/", 1)[0] or ":" in image.split("/", 1)[0]) else "docker.io"
    if pull_secret_missing or _AUTH.search(message):
        conf = 0.95 if pull_secret_missing or "failed to authorize" in message else 0.85
        return [ctx.hyp(Cause.image_pull_unauthorized, obj, conf,
                        f"the registry {registry} refuses to serve {image} without credentials", facts,
                        image=image, registry=registry, pull_secret=pull_secret_missing or ""),
                ctx.hyp(Cause.image_not_found, obj, 0.3, f"{image} may not exist", facts, image=image)]
    if _DNS.search(message):
        return [ctx.hyp(Cause.registry_unresolvable, obj, 0.95, f"the registry host {registry} of {image} does not resolve",
                        facts, image=image, registry=registry),
                ctx.hyp(Cause.image_not_found, obj, 0.35, f"the image reference {image} may be mistyped", facts, image=image)]
    if _NOT_FOUND.search(message):
        return [ctx.hyp(Cause.image_not_found, obj, 0.95, f"the image {image} does not exist in {registry}", facts, image=image),
                ctx.hyp(Cause.image_pull_unauthorized, obj, 0.25, f"or {registry} hides it without credentials", facts, image=image)]
    return [ctx.hyp(Cause.image_not_found, obj, 0.6, f"pulling {image} fails", facts, image=image),
            ctx.hyp(Cause.registry_unresolvable, obj, 0.3, f"the registry of {image} may be unreachable", facts, image=image)]


def image_pull(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    for wl in ctx.troubled:
        pods = ctx.pods_by_wl.get(wl, [])
        waiting = [c for p in pods for c in p.containers if c.state.reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")]
        evs = [e for _, e in ctx.current_pod_events(wl) if _PULL.search(e.message) or e.reason == "FailedToRetrieveImagePullSecret"]
        status_pull = any(p.status in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName") for p in pods)
        if not (waiting or evs or status_pull):
            continue
        pull_ev = next((e for e in evs if _PULL.search(e.message)), None)
        secret_ev = next((e for e in evs if e.reason == "FailedToRetrieveImagePullSecret"), None)
        missing_secret = None
        if secret_ev is not None:
            m = _PULL_SECRET.search(secret_ev.message)
            missing_secret = m.group("names") if m else "?"
        spec = ctx.spec_of(wl)
        if missing_secret is None and spec and spec.image_pull_secrets and ctx.e.secrets is not None:
            known = {s.name for s in ctx.e.secrets}
            absent = [s for s in spec.image_pull_secrets if s not in known]
            missing_secret = ",".join(absent) or None
        facts = [ctx.event_fact(e) for e in (pull_ev, secret_ev) if e is not None]
        message = pull_ev.message if pull_ev else next((c.state.message or "" for c in waiting), "")
        if not facts:
            facts = [Fact(source="status", ref=f"pods of {wl}", text=f"waiting: {next((c.state.reason for c in waiting), 'ImagePullBackOff')} {message}".strip())]
        m = _PULL.search(message)
        image = m.group("image") if m else next((c.image for c in (spec.containers if spec else [])), "?")
        out += _image_hyps(ctx, wl, image, message, facts, missing_secret)
    return out


def config_error(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    for wl in ctx.troubled:
        evs = [e for _, e in ctx.current_pod_events(wl) if e.reason in ("Failed", "FailedMount") and (_SECRET.search(e.message) or _CONFIGMAP.search(e.message))]
        waits = [c.state.message or "" for p in ctx.pods_by_wl.get(wl, []) for c in p.containers
                 if c.state.reason == "CreateContainerConfigError"]
        status_cfg = any(p.status == "CreateContainerConfigError" for p in ctx.pods_by_wl.get(wl, []))
        texts = [e.message for e in evs] + waits
        facts = [ctx.event_fact(e) for e in evs[:2]] or [Fact(source="status", ref=f"pods of {wl}", text=f"CreateContainerConfigError {w}".strip()) for w in waits[:1]]
        for text in texts:
            ms, mc = _SECRET.search(text), _CONFIGMAP.search(text)
            if ms:
                name = ms.group("name") or ms.group("sname")
                out.append(ctx.hyp(Cause.secret_missing, ctx.app(wl), 0.96, f"{wl} references Secret {name}{' key ' + ms.group('key') if ms.group('key') else ''}, which does not exist",
                                   facts, secret=name, key=ms.group("key") or ""))
                break
            if mc:
                name = mc.group("name") or mc.group("cname")
                out.append(ctx.hyp(Cause.config_map_missing, ctx.app(wl), 0.95, f"{wl} references ConfigMap {name}, which does not exist",
                                   facts, config_map=name, key=mc.group("key") or ""))
                break
        else:
            if status_cfg or waits:
                out += _missing_refs(ctx, wl)
    return out


def _missing_refs(ctx: Context, wl: str) -> list[Hypothesis]:
    """CreateContainerConfigError with no message kept: compare the template's references with what exists."""
    spec = ctx.spec_of(wl)
    out: list[Hypothesis] = []
    if spec is None:
        return out
    secrets = {s.name for s in ctx.e.secrets} if ctx.e.secrets is not None else None
    for c in spec.containers:
        refs = [v.secret_ref.name for v in c.env if v.secret_ref and not v.secret_ref.optional]
        refs += [f.name for f in c.env_from if f.kind == "Secret" and not f.optional]
        for name in refs:
            if secrets is not None and name not in secrets:
                out.append(ctx.hyp(Cause.secret_missing, ctx.app(wl), 0.85, f"{wl} references Secret {name}, which does not exist",
                                   [ctx.field_fact(f"deployment/{wl} container {c.name}", f"env from Secret {name}")], secret=name))
    return out


def volume_permission(ctx: Context) -> list[Hypothesis]:
    out: list[Hypothesis] = []
    for wl in ctx.troubled:
        pods = ctx.pods_by_wl.get(wl, [])
        crashing = any(c.restart_count > 0 or c.state.reason == "CrashLoopBackOff" for p in pods for c in p.containers)
        if not crashing:
            continue
        hit = ctx.find_log(wl, _PERMISSION)
        spec = ctx.spec_of(wl)
        mounts = [m for c in (spec.containers if spec else []) for m in c.volume_mounts if not m.path.startswith("/var/run/secrets")]
        if hit is None:
            continue
        conf = 0.9 if mounts or "Permission denied" in hit[1] else 0.6
        out.append(ctx.hyp(Cause.volume_permission_denied, ctx.app(wl), conf,
                           f"{wl} exits because it may not access a file it needs", [ctx.log_fact(*hit)] +
                           [ctx.field_fact(f"deployment/{wl} volumeMounts", ", ".join(f"{m.name} at {m.path}" for m in mounts[:3]))] * bool(mounts),
                           mount=",".join(m.path for m in mounts[:3])))
    return out


SIGNATURES = (image_pull, config_error, volume_permission)
