"""Pure logic: many RayServices' ``serveConfigV2`` -> one Ray Serve declarative config, and back.

KubeRay gives every RayService its own Ray cluster, so each ``serveConfigV2`` is PUT as-is to its
own dashboard. The stand-in has ONE local cluster, and a PUT to ``/api/serve/applications/``
replaces the whole set of applications, so it must send the union of all RayServices at once:

* application names are prefixed ``<namespace>.<name>.<app>`` so two RayServices may both call
  their app ``default`` or ``llm``. ('.' because Serve uses '#' inside replica ids and the
  dashboard puts app names in URL paths, which rules out '/'; namespaces and RayService names
  are DNS labels, so the first two dots split the name unambiguously.)
* route prefixes are nested under ``/<namespace>/<name>``: an app at ``/`` is served at
  ``http://127.0.0.1:<serve port>/<namespace>/<name>``, one at ``/chat`` at ``.../<name>/chat``.
  That URL plays the part of ``http://<name>-serve-svc.<namespace>:8000`` in a real cluster and
  is what ``controller.serve_endpoint`` reads off the RayService status. FastAPI ingresses see
  the prefix as their ``root_path``, so their own routes (``/chat``, ``/v1/chat/completions``)
  work unchanged below it.
* top-level keys other than ``applications`` (``http_options``, ``proxy_location``,
  ``grpc_options``, ``logging_config``...) are cluster-wide in Serve; the stand-in owns them
  (loopback host, its own port) and ignores a RayService's values.

Each RayService's config is validated on its own with Serve's own schema before merging, so one
broken RayService is reported as ``ValidationFailed`` instead of making the shared PUT fail for
everybody.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml

from controller.workspace.probe import standin_route_base

SEP = "."
IGNORED_TOP_LEVEL = ("http_options", "proxy_location", "grpc_options", "logging_config", "tracing_config")


class ServeConfigError(ValueError):
    """A serveConfigV2 that cannot be deployed (bad YAML, wrong shape, rejected by Serve's schema)."""


def serve_app_name(namespace: str, name: str, app: str) -> str:
    return f"{namespace}{SEP}{name}{SEP}{app}"


def split_serve_app_name(serve_name: str) -> tuple[str, str, str] | None:
    """Inverse of serve_app_name; None for apps the stand-in did not deploy."""
    parts = serve_name.split(SEP, 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def route_base(namespace: str, name: str) -> str:
    """Where a RayService's apps live on the shared Serve proxy (the controller's probe reads the
    same rule: controller.workspace.probe.standin_route_base)."""
    return standin_route_base(namespace, name)


def nest_route_prefix(namespace: str, name: str, route_prefix: str | None) -> str | None:
    """``/`` -> ``/ns/name``; ``/chat`` -> ``/ns/name/chat``; None (no HTTP route) stays None."""
    if route_prefix is None:
        return None
    inner = route_prefix.strip()
    if not inner.startswith("/"):
        inner = "/" + inner
    inner = inner.rstrip("/")
    return route_base(namespace, name) + inner


@dataclass
class ParsedServeConfig:
    """One RayService's applications, original names -> app dicts (already rewritten for Serve)."""

    namespace: str
    name: str
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)  # original app name -> serve app dict
    ignored_keys: list[str] = field(default_factory=list)

    @property
    def serve_names(self) -> dict[str, str]:
        """original app name -> name in Serve."""
        return {app: serve_app_name(self.namespace, self.name, app) for app in self.apps}


def parse_serve_config(namespace: str, name: str, text: str | None) -> ParsedServeConfig:
    """Parse and validate one RayService's serveConfigV2 and rewrite its apps for the shared cluster."""
    if text is None or not str(text).strip():
        raise ServeConfigError("spec.serveConfigV2 is empty: there is no Serve application to run")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ServeConfigError(f"spec.serveConfigV2 is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ServeConfigError("spec.serveConfigV2 must be a YAML mapping with an 'applications' list")
    applications = doc.get("applications")
    if not isinstance(applications, list) or not applications:
        raise ServeConfigError(
            "spec.serveConfigV2 has no 'applications' list (a multi-app config is required)"
        )
    _validate_with_serve_schema(doc)
    parsed = ParsedServeConfig(namespace, name, ignored_keys=[k for k in IGNORED_TOP_LEVEL if k in doc])
    for app in applications:
        app = copy.deepcopy(app)
        original = app.get("name") or "default"
        app["name"] = serve_app_name(namespace, name, original)
        app["route_prefix"] = nest_route_prefix(namespace, name, app.get("route_prefix", "/"))
        parsed.apps[original] = app
    return parsed


def _validate_with_serve_schema(doc: dict[str, Any]) -> None:
    """Serve's own pydantic schema: the checks the dashboard would apply to the PUT."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate({"applications": doc["applications"]})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ServeConfigError(f"spec.serveConfigV2 rejected by Ray Serve's schema: {problems}") from None


def merged_config(configs: list[ParsedServeConfig], serve_host: str, serve_port: int) -> dict[str, Any]:
    """The one declarative config to PUT: every RayService's apps, our HTTP options."""
    apps: list[dict[str, Any]] = []
    for cfg in sorted(configs, key=lambda c: (c.namespace, c.name)):
        apps.extend(cfg.apps[a] for a in sorted(cfg.apps))
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": serve_host, "port": serve_port},
        "applications": apps,
    }


# --- Serve's GET /api/serve/applications/ -> KubeRay's applicationStatuses ---------------------------


def application_statuses(cfg: ParsedServeConfig, serve_apps: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{app: {status, message, serveDeploymentStatuses}}`` for one RayService, keyed by the app
    names in its own serveConfigV2, as KubeRay reports them. Apps Serve does not know (yet) are
    left out, as KubeRay does."""
    out: dict[str, dict[str, Any]] = {}
    for original, serve_name in cfg.serve_names.items():
        info = serve_apps.get(serve_name)
        if not isinstance(info, dict):
            continue
        deployments = {
            dep_name: _without_empty({"status": dep.get("status"), "message": dep.get("message")})
            for dep_name, dep in (info.get("deployments") or {}).items()
            if isinstance(dep, dict)
        }
        out[original] = _without_empty(
            {
                "status": info.get("status"),
                "message": info.get("message"),
                "serveDeploymentStatuses": deployments or None,
            }
        )
    return out


def all_running(cfg: ParsedServeConfig, statuses: dict[str, dict[str, Any]]) -> bool:
    """KubeRay's readiness rule: at least one app, and every app of the config RUNNING."""
    return bool(cfg.apps) and all((statuses.get(app) or {}).get("status") == "RUNNING" for app in cfg.apps)


def _without_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in (None, "")}
