"""KubeRay ``RayService`` (ray.io/v1): a Ray cluster plus a Ray Serve config that KubeRay keeps running.

Shape from kuberay ray-operator/apis/ray/v1/rayservice_types.go (shared/research/ray.md §1). Pod templates
are kept loose (plain dicts); ``serveConfigV2`` is a YAML *string*, as KubeRay requires. The status is
what KubeRay writes: a Ready condition, ``serviceStatus`` and per-application statuses.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from controller.api.meta import Condition, K8sObject, LooseModel

GROUP = "ray.io"
VERSION = "v1"

CONDITION_READY = "Ready"
CONDITION_UPGRADE_IN_PROGRESS = "UpgradeInProgress"
SERVICE_STATUS_RUNNING = "Running"

# Ray Serve application statuses (ray/serve/_private/common.py ApplicationStatus).
APP_NOT_STARTED = "NOT_STARTED"
APP_DEPLOYING = "DEPLOYING"
APP_RUNNING = "RUNNING"
APP_DEPLOY_FAILED = "DEPLOY_FAILED"
APP_DELETING = "DELETING"
APP_UNHEALTHY = "UNHEALTHY"

_LOOSE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


class HeadGroupSpec(LooseModel):
    ray_start_params: dict[str, str] | None = None
    template: dict[str, Any] = Field(
        default_factory=dict, description="A core/v1 PodTemplateSpec.", json_schema_extra=_LOOSE
    )
    service_type: str | None = None


class WorkerGroupSpec(LooseModel):
    group_name: str
    replicas: int | None = Field(default=None, ge=0)
    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=0)
    num_of_hosts: int | None = Field(default=None, ge=1)
    ray_start_params: dict[str, str] | None = None
    template: dict[str, Any] = Field(
        default_factory=dict, description="A core/v1 PodTemplateSpec.", json_schema_extra=_LOOSE
    )


class AuthOptions(LooseModel):
    """KubeRay v1.6's ``RayCluster.spec.authOptions`` (``controller/workspace/ray_auth.py``)."""

    mode: Literal["disabled", "token"] | None = None
    secret_name: str | None = None
    enable_k8s_token_auth: bool | None = Field(default=None, alias="enableK8sTokenAuth")


class RayClusterSpec(LooseModel):
    ray_version: str | None = None
    auth_options: AuthOptions | None = None
    enable_in_tree_autoscaling: bool | None = None
    autoscaler_options: dict[str, Any] | None = Field(default=None, json_schema_extra=_LOOSE)
    head_group_spec: HeadGroupSpec
    worker_group_specs: list[WorkerGroupSpec] | None = None


class UpgradeStrategy(LooseModel):
    type: Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"] | None = None


class RayServiceSpec(LooseModel):
    serve_config_v2: str | None = Field(default=None, description="Ray Serve multi-app config, as YAML text.")
    ray_cluster_config: RayClusterSpec
    upgrade_strategy: UpgradeStrategy | None = None
    serve_service: dict[str, Any] | None = Field(default=None, json_schema_extra=_LOOSE)
    exclude_head_pod_from_serve_svc: bool | None = None


class ServeDeploymentStatus(LooseModel):
    status: str | None = None
    message: str | None = None


class AppStatus(LooseModel):
    status: str | None = None
    message: str | None = None
    serve_deployment_statuses: dict[str, ServeDeploymentStatus] | None = None


class RayServiceStatus(LooseModel):
    """One cluster's serving state (activeServiceStatus / pendingServiceStatus)."""

    ray_cluster_name: str | None = None
    ray_cluster_status: dict[str, Any] | None = Field(default=None, json_schema_extra=_LOOSE)
    application_statuses: dict[str, AppStatus] | None = None


class RayServiceStatuses(LooseModel):
    model_config = ConfigDict(extra="allow")

    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    service_status: str | None = None
    num_serve_endpoints: int | None = None
    observed_generation: int | None = None
    last_update_time: str | None = None
    active_service_status: RayServiceStatus | None = None
    pending_service_status: RayServiceStatus | None = None


class RayService(K8sObject):
    GROUP: ClassVar[str] = GROUP
    VERSIONS: ClassVar[tuple[str, ...]] = (VERSION,)
    KIND: ClassVar[str] = "RayService"
    PLURAL: ClassVar[str] = "rayservices"

    api_version: str = f"{GROUP}/{VERSION}"
    kind: Literal["RayService"] = "RayService"
    spec: RayServiceSpec
    status: RayServiceStatuses | None = None

    @property
    def is_ready(self) -> bool:
        """KubeRay's Ready condition (serviceStatus "Running" is its deprecated twin)."""
        if self.status is None:
            return False
        if self.status.conditions:
            return self.is_condition_true(CONDITION_READY)
        return self.status.service_status == SERVICE_STATUS_RUNNING

    def application_status(self, app: str) -> AppStatus | None:
        """The active cluster's status of Serve application ``app``, if KubeRay has reported it."""
        active = self.status.active_service_status if self.status else None
        if active is None or not active.application_statuses:
            return None
        return active.application_statuses.get(app)

    def failed_applications(self) -> dict[str, str]:
        """Applications in DEPLOY_FAILED or UNHEALTHY on the active cluster: name -> message."""
        active = self.status.active_service_status if self.status else None
        return {
            name: (app.message or app.status or "")
            for name, app in ((active.application_statuses or {}) if active else {}).items()
            if app.status in (APP_DEPLOY_FAILED, APP_UNHEALTHY)
        }
