"""The kaito.sh Workspace: one resource saying "serve (or tune) preset X on GPU nodes of type Y".

As in Kaito, ``resource``, ``inference``, ``tuning`` and ``status`` sit at the top level of the object,
next to ``metadata`` (there is no ``spec``). v1alpha1 and v1beta1 share this schema; v1beta1 is stored.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from controller.api.meta import (
    Condition,
    K8sModel,
    K8sObject,
    LabelSelector,
    set_condition,
)

GROUP = "kaito.sh"
VERSIONS = ("v1alpha1", "v1beta1")

# --- labels, annotations, finalizer (Kaito's api/v1beta1/labels.go names) ------------------------------
LABEL_WORKSPACE = "kaito.sh/workspace"
LABEL_WORKSPACE_NAMESPACE = "kaito.sh/workspacenamespace"
FINALIZER = "workspace.finalizer.kaito.sh"
ANNOTATION_BYPASS_RESOURCE_CHECKS = "kaito.sh/bypass-resource-checks"
ANNOTATION_ENABLE_LB = "kaito.sh/enablelb"
# comma-separated CIDRs a LoadBalancer Service admits (its loadBalancerSourceRanges)
ANNOTATION_LB_SOURCE_RANGES = "kaito.sh/loadbalancer-source-ranges"
API_KEY_SECRET_KEY = "API_KEY"  # the key, in the Secret inference.apiKeySecret names

# --- condition types ------------------------------------------------------------------------------------
CONDITION_RESOURCE_READY = "ResourceReady"
CONDITION_INFERENCE_READY = "InferenceReady"
CONDITION_WORKSPACE_READY = "WorkspaceReady"
CONDITION_JOB_STARTED = "JobStarted"
CONDITION_WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"
CONDITION_MACHINE_READY = "MachineReady"
CONDITION_WORKSPACE_DELETING = "WorkspaceDeleting"

# --- status.state ---------------------------------------------------------------------------------------
WorkspaceState = Literal["Pending", "Ready", "NotReady", "Running", "Succeeded", "Failed"]
TuningMethod = Literal["lora", "qlora"]

MAX_ADAPTERS = 10
# Bounds of the spec's lists and their strings, in the CRD only (the API server refuses an
# oversized object before it is stored or reaches the webhook; the models do not enforce them, so
# an object stored before a bound existed still parses and can still be deleted).
MAX_URLS = 64
MAX_URL_LENGTH = 2048
MAX_PULL_SECRETS = 16
MAX_PREFERRED_NODES = 100  # validation.MAX_NODE_COUNT
MAX_NAME = 253  # a DNS-1123 subdomain: Secret and Node names
DNS1123_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# Marks a free-form field (a PodTemplateSpec, a VolumeSource): the CRD keeps it unpruned.
PRESERVE_UNKNOWN = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """``x-kubernetes-validations`` for a schema: (CEL rule, message a person can act on) pairs."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


def bounded_strings(max_items: int, max_length: int) -> dict[str, Any]:
    """A list's ``maxItems`` and its strings' ``maxLength``, for a CRD schema."""
    return {"maxItems": max_items, "items": {"type": "string", "maxLength": max_length}}


def immutable(what: str) -> dict[str, Any]:
    """CEL transition rule: the field may not change once set."""
    return cel(("self == oldSelf", f"{what} is immutable"))


class PartitionSpec(K8sModel):
    """Kaito v0.12's GPU partitioning: existing nodes (no instanceType, nothing provisioned)
    whose Ray workers ask for ``count`` whole GPUs (mode accelerator) or one MIG slice of
    ``profile`` (mode mig, ``nvidia.com/mig-<profile>``). Rules: ``validation.validate_partition``.
    """

    mode: Literal["mig", "accelerator"] = Field(description="mig: MIG slices; accelerator: whole GPUs.")
    profile: str | None = Field(default=None, max_length=64, description="MIG profile, e.g. 1g.10gb.")
    count: int | None = Field(default=None, ge=1, le=64,
                              description="Whole GPUs per replica (mode accelerator).")


class ResourceSpec(K8sModel):
    """The GPU nodes to run on."""

    count: int = Field(
        default=1, ge=1, description="Number of GPU nodes asked for; the estimator may raise it."
    )
    instance_type: str | None = Field(
        default=None,
        max_length=128,
        description="GPU VM SKU, e.g. Standard_NC6s_v3. Immutable.",
        json_schema_extra=immutable("resource.instanceType"),
    )
    label_selector: LabelSelector = Field(
        description="Labels of the nodes that belong to this workspace. Immutable.",
        json_schema_extra=immutable("resource.labelSelector"),
    )
    preferred_nodes: list[str] | None = Field(
        default=None, description="Existing nodes to use first.",
        json_schema_extra=bounded_strings(MAX_PREFERRED_NODES, MAX_NAME),
    )
    partition: PartitionSpec | None = Field(
        default=None,
        description="GPU partitioning of existing nodes (Kaito v0.12): no instanceType. Immutable.",
        json_schema_extra=immutable("resource.partition"),
    )

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(oldSelf.instanceType) || has(self.instanceType)",
                "resource.instanceType cannot be removed once set",
            ),
        )
    )


class PresetOptions(K8sModel):
    model_access_secret: str | None = Field(
        default=None, max_length=253, description="Secret with key HF_TOKEN, for gated models."
    )


class PresetSpec(K8sModel):
    name: str = Field(
        min_length=1,
        max_length=253,
        description="A preset from the catalog, e.g. phi-3-mini-4k-instruct. Immutable.",
        json_schema_extra=immutable("preset name"),
    )
    preset_options: PresetOptions | None = None


class DataSource(K8sModel):
    """Where data comes from: exactly one of urls, image, volumeSource or path."""

    name: str | None = Field(default=None, max_length=253)
    urls: list[str] | None = Field(default=None, json_schema_extra=bounded_strings(MAX_URLS, MAX_URL_LENGTH))
    image: str | None = Field(default=None, max_length=1024)
    image_pull_secrets: list[str] | None = Field(
        default=None, json_schema_extra=bounded_strings(MAX_PULL_SECRETS, MAX_NAME)
    )
    volume_source: dict[str, Any] | None = Field(
        default=None, description="A core/v1 VolumeSource.", json_schema_extra=PRESERVE_UNKNOWN
    )
    path: str | None = Field(default=None, max_length=4096, description="A directory on the node.")

    def given_sources(self) -> list[str]:
        """The wire names of the source fields that are set."""
        pairs = (
            ("urls", self.urls),
            ("image", self.image),
            ("volumeSource", self.volume_source),
            ("path", self.path),
        )
        return [name for name, value in pairs if value]


class DataDestination(K8sModel):
    """Where tuning results go: exactly one of image (with imagePushSecret), volumeSource or path."""

    image: str | None = Field(default=None, max_length=1024)
    image_push_secret: str | None = Field(default=None, max_length=253)
    volume_source: dict[str, Any] | None = Field(
        default=None, description="A core/v1 VolumeSource.", json_schema_extra=PRESERVE_UNKNOWN
    )
    path: str | None = Field(default=None, max_length=4096)

    def given_destinations(self) -> list[str]:
        pairs = (("image", self.image), ("volumeSource", self.volume_source), ("path", self.path))
        return [name for name, value in pairs if value]


class AdapterSource(DataSource):
    name: str = Field(min_length=1, max_length=63, description="Adapter name: a DNS-1123 label, unique.")


class AdapterSpec(K8sModel):
    source: AdapterSource
    strength: str = Field(default="1.0", max_length=32, description="A float in [0, 1], as a string.")


class InferenceSpec(K8sModel):
    preset: PresetSpec | None = None
    template: dict[str, Any] | None = Field(
        default=None,
        description="A core/v1 PodTemplateSpec, instead of a preset.",
        json_schema_extra=PRESERVE_UNKNOWN,
    )
    config: str | None = Field(
        default=None, max_length=253, description="ConfigMap (key inference_config.yaml) in the namespace."
    )
    adapters: list[AdapterSpec] | None = Field(
        default=None,
        # maxItems in the CRD only: the webhook's own check gives the clearer message
        json_schema_extra={
            "maxItems": MAX_ADAPTERS,
            **cel(
                (
                    "self.all(a, self.exists_one(b, b.source.name == a.source.name))",
                    "adapter source names must be unique",
                )
            ),
        },
    )
    api_key_secret: str | None = Field(
        default=None, max_length=253, pattern=DNS1123_SUBDOMAIN_PATTERN,
        description="Secret (key API_KEY) in the namespace: /chat and /v1 then require "
                    "'Authorization: Bearer <key>'.",
    )

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "has(self.preset) != has(self.template)",
                "exactly one of inference.preset or inference.template must be set",
            ),
        )
    )


class TuningSpec(K8sModel):
    preset: PresetSpec
    method: TuningMethod = Field(default="lora", json_schema_extra=immutable("tuning.method"))
    config: str | None = Field(
        default=None, max_length=253, pattern=DNS1123_SUBDOMAIN_PATTERN,
        description="ConfigMap (key training_config.yaml) in the namespace. Immutable.",
        json_schema_extra=immutable("tuning.config"),
    )
    input: DataSource = Field(description="Immutable: the tuning Job reads it once.",
                              json_schema_extra=immutable("tuning.input"))
    output: DataDestination = Field(description="Immutable: the tuning Job writes it once.",
                                    json_schema_extra=immutable("tuning.output"))

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "[has(self.input.urls), has(self.input.image), has(self.input.volumeSource),"
                " has(self.input.path)].filter(x, x).size() == 1",
                "tuning.input needs exactly one of urls, image, volumeSource or path",
            ),
            (
                "[has(self.output.image), has(self.output.volumeSource), has(self.output.path)]"
                ".filter(x, x).size() == 1",
                "tuning.output needs exactly one of image, volumeSource or path",
            ),
        )
    )


# --- status.timeline: the cold start, phase by phase (controller/workspace/timeline.py) ---------------
PHASE_NODES_CREATED = "NodesCreated"
PHASE_NODES_READY = "NodesReady"
PHASE_RAY_CLUSTER_UP = "RayClusterUp"
PHASE_WEIGHTS_LOADED = "WeightsLoaded"
PHASE_FIRST_REQUEST_ANSWERED = "FirstRequestAnswered"
INFERENCE_PHASES = (PHASE_NODES_CREATED, PHASE_NODES_READY, PHASE_RAY_CLUSTER_UP, PHASE_WEIGHTS_LOADED,
                    PHASE_FIRST_REQUEST_ANSWERED)
TUNING_PHASES = (PHASE_NODES_CREATED, PHASE_NODES_READY)
# after the cold start: the latest time the serve deployments stopped being HEALTHY (a replica or
# container restart, a redeploy) and the latest time they were HEALTHY again (workspace/timeline.py)
PHASE_SERVING_INTERRUPTED = "ServingInterrupted"
PHASE_WEIGHTS_RELOADED = "WeightsReloaded"
RESTART_PHASES = (PHASE_SERVING_INTERRUPTED, PHASE_WEIGHTS_RELOADED)


class PhaseEnd(K8sModel):
    """One phase of the cold start: when it ended and how long it took (since the previous one)."""

    phase: str = Field(min_length=1, max_length=63, description="NodesCreated, NodesReady, RayClusterUp, "
                       "WeightsLoaded, FirstRequestAnswered; after the cold start ServingInterrupted and "
                       "WeightsReloaded (the latest restart of the serve deployments)")
    ended_at: str = Field(max_length=40, description="RFC 3339 time the phase ended",
                          json_schema_extra={"format": "date-time"})
    seconds: float = Field(ge=0, description="how long the phase took: since the previous phase ended "
                           "(the first: since the workspace was created; ServingInterrupted: since the "
                           "weights were last loaded; WeightsReloaded: since ServingInterrupted)")
    count: int | None = Field(default=None, ge=1, description="ServingInterrupted and WeightsReloaded: "
                              "how many times so far (the entry describes the latest)")


class ResolvedModelStatus(K8sModel):
    """A model id the catalog lacks, as the controller resolved it from the hub (controller/workspace/
    model_record.py says why it is kept here): the preset derived from the checkpoint, the commit
    it was read at (what the serve pods load) and what ResourceReady says it was sized from."""

    name: str = Field(min_length=1, max_length=255, description="the Hugging Face model id")
    revision: str = Field(min_length=1, max_length=255, description="the hub's commit sha of the checkpoint")
    endpoint: str = Field(default="", max_length=2048, description="the hub it was read from")
    sized_from: str = Field(default="", max_length=1024, description="what ResourceReady quotes")
    preset: dict[str, Any] = Field(description="the preset derived from config.json and the safetensors "
                                   "headers (presets.registry.Preset)", json_schema_extra=PRESERVE_UNKNOWN)


class WorkspaceStatus(K8sModel):
    worker_nodes: list[str] | None = None
    state: WorkspaceState | None = None
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    target_node_count: int | None = Field(default=None, ge=0)
    timeline: list[PhaseEnd] | None = Field(
        default=None,
        description="The cold start: when each phase ended and how long it took; set once per phase. "
                    "Then the latest restart of the serve deployments, and how long the reload took.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["phase"],
                           "maxItems": 16},
    )
    resolved_model: ResolvedModelStatus | None = Field(
        default=None, description="An uncatalogued model id as resolved from the hub, kept so that a "
        "restarted controller needs no hub read and the served revision stays pinned.")


class Workspace(K8sObject):
    GROUP: ClassVar[str] = GROUP
    VERSIONS: ClassVar[tuple[str, ...]] = VERSIONS
    KIND: ClassVar[str] = "Workspace"
    PLURAL: ClassVar[str] = "workspaces"

    api_version: str = f"{GROUP}/{VERSIONS[-1]}"
    kind: Literal["Workspace"] = "Workspace"
    resource: ResourceSpec
    inference: InferenceSpec | None = None
    tuning: TuningSpec | None = None
    status: WorkspaceStatus | None = None

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "has(self.inference) != has(self.tuning)",
                "exactly one of inference or tuning must be specified",
            ),
            (
                "has(oldSelf.inference) == has(self.inference)",
                "inference cannot be added or removed once the workspace exists",
            ),
            (
                "has(oldSelf.tuning) == has(self.tuning)",
                "tuning cannot be added or removed once the workspace exists",
            ),
        )
    )

    # --- convenience for the reconciler ---------------------------------------------------------
    @property
    def preset_name(self) -> str | None:
        spec = self.inference.preset if self.inference else (self.tuning.preset if self.tuning else None)
        return spec.name if spec else None

    def ensure_status(self) -> WorkspaceStatus:
        if self.status is None:
            self.status = WorkspaceStatus()
        if self.status.conditions is None:
            self.status.conditions = []
        return self.status

    def set_condition(self, type_: str, status: str, reason: str, message: str = "") -> bool:
        """Set a status condition stamped with this object's generation; return whether it changed."""
        conds = self.ensure_status().conditions
        assert conds is not None
        new = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            observed_generation=self.metadata.generation,
        )
        return set_condition(conds, new)
