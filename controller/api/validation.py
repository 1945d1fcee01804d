"""Workspace validation: the one set of pure rules the admission webhook and the reconciler both call.

Every message names the field, says what is wrong and what to do instead. Rules follow Kaito's
``workspace_validation.go`` (shared/research/kaito.md §1.8) with this project's catalog and estimator.

Why the reconciler runs them too (``reconcile_problem``): the webhook may be absent (a local run
without ``--webhook-port``, a failurePolicy of Ignore) and objects stored before a rule existed are
still served, so the reconciler reports a problem in ResourceReady and a Warning Event instead of
crashing or retrying forever. It skips the fit check (``check_fit=False``): its planner
(``controller.workspace.plan.plan_for``) runs the estimator anyway and judges a misfit with
``judge_fit``, so one pass estimates once.

On UPDATE only what changed is judged: an object whose spec is unchanged (a finalizer added, a label
edited, a deletion under way) is always admitted, so a catalog change can never wedge an existing
workspace's metadata updates or its deletion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from controller.api.datasources import (
    DEFAULT_MOUNT_POLICY,
    INPUT_VOLUME_TYPES,
    OUTPUT_VOLUME_TYPES,
    MountPolicy,
    node_path_problem,
    volume_source_problem,
)
from controller.api.labels import label_key_problem, label_value_problem, node_label_problem
from controller.api.meta import LabelSelector
from controller.api.workspace import (
    ANNOTATION_BYPASS_RESOURCE_CHECKS,
    DNS1123_SUBDOMAIN_PATTERN,
    MAX_ADAPTERS,
    AdapterSpec,
    DataSource,
    TuningSpec,
    Workspace,
)
from presets.estimator import EstimateError, estimate_nodes, unknown_preset_message, unknown_sku_message
from presets.hf_config import looks_like_hf_id
from presets.registry import Catalog, GpuSku, Preset, default_catalog
from rayserve.tuning import netguard

# The RayService serving a workspace takes its name; KubeRay wants a DNS-1035 label of <= 47 characters
# (it appends "-xxxxx" for the RayCluster and stays under 53).
MAX_NAME_LENGTH = 47
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN_PATTERN)
# resource.count is how many Machines the controller creates (and lists names for) in one pass: an absurd
# value (2**40 is a valid int64) would wedge a worker and exhaust memory, so cap it well above any real use.
MAX_NODE_COUNT = 100


@dataclass(frozen=True)
class FieldError:
    field: str  # the wire path, e.g. "inference.preset.name"
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass
class ValidationResult:
    errors: list[FieldError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.errors

    @property
    def message(self) -> str:
        """All errors in one string, as the API server shows a webhook denial."""
        return "; ".join(str(e) for e in self.errors)

    def error(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"true", "1", "yes"}


def _spec(ws: Workspace) -> dict[str, Any]:
    dumped = ws.to_k8s()
    return {k: dumped.get(k) for k in ("resource", "inference", "tuning")}


# --- entry points ---------------------------------------------------------------------------------------


def validate_workspace_object(
    obj: dict[str, Any], old_obj: dict[str, Any] | None = None, *, catalog: Catalog | None = None,
    mounts: MountPolicy = DEFAULT_MOUNT_POLICY,
) -> ValidationResult:
    """Validate raw API objects (as in an AdmissionReview); shape errors become field errors too."""
    result = ValidationResult()
    try:
        ws = Workspace.from_k8s(obj)
    except ValidationError as exc:
        for err in exc.errors():
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
            result.error(path or "(root)", "is required" if err["type"] == "missing" else err["msg"])
        return result
    old = None
    if old_obj is not None:
        try:
            old = Workspace.from_k8s(old_obj)
        except ValidationError:
            old = None  # an old object we cannot read: judge the new one as if created
    return validate_workspace(ws, old, catalog=catalog, mounts=mounts)


def validate_workspace(
    ws: Workspace, old: Workspace | None = None, *, catalog: Catalog | None = None, check_fit: bool = True,
    mounts: MountPolicy = DEFAULT_MOUNT_POLICY,
) -> ValidationResult:
    """Validate a Workspace on create (``old`` None) or update; ``check_fit`` False leaves out the
    estimator (whether the preset fits the instance type), for a caller that runs it itself;
    ``mounts``: the operator's CSI drivers and node path prefix."""
    catalog = catalog or default_catalog()
    result = ValidationResult()
    if old is not None:
        if ws.metadata.deletion_timestamp or _spec(ws) == _spec(old):
            return result
        validate_update(ws, old, result)
    else:
        validate_name(ws.name, result)
    validate_spec(ws, catalog, result, check_fit=check_fit, mounts=mounts)
    return result


def reconcile_problem(ws: Workspace, *, catalog: Catalog | None = None,
                      mounts: MountPolicy = DEFAULT_MOUNT_POLICY) -> str | None:
    """None if the reconciler can build ``ws``, else every problem joined into one message: the
    create-time rules but the fit (see the module docstring), then what this controller cannot
    build yet."""
    problems = validate_workspace(ws, catalog=catalog, check_fit=False, mounts=mounts).errors or \
        controller_limits(ws)
    return "; ".join(str(e) for e in problems) if problems else None


def controller_limits(ws: Workspace) -> list[FieldError]:
    """What the webhook admits (Kaito does) but this controller cannot build yet."""
    if ws.inference is not None and ws.inference.preset is None and ws.inference.template is not None:
        return [FieldError("inference.template", "custom pod templates are not supported yet; name a "
                                                 "preset in inference.preset.name")]
    return []


def bypasses_resource_checks(ws: Workspace) -> bool:
    """Whether the workspace carries Kaito's annotation that turns a misfit into a warning."""
    return _truthy(ws.metadata.annotations and ws.metadata.annotations.get(ANNOTATION_BYPASS_RESOURCE_CHECKS))


def judge_fit(message: str, bypass: bool, result: ValidationResult, path: str = "resource.instanceType"
              ) -> None:
    """The estimator found the preset does not fit the instance type (``message``): an error on
    ``path``, or a warning under the bypass annotation."""
    if bypass:
        allowed_by = f"(allowed by annotation {ANNOTATION_BYPASS_RESOURCE_CHECKS})"
        result.warnings.append(f"{path}: {message} {allowed_by}")
    else:
        result.error(path, message)


# --- rules ----------------------------------------------------------------------------------------------


def validate_name(name: str, result: ValidationResult) -> None:
    if len(name) > MAX_NAME_LENGTH or not DNS1035_LABEL.match(name):
        result.error(
            "metadata.name",
            f"{name!r} must be at most {MAX_NAME_LENGTH} characters of lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit (the RayService that serves the "
            "workspace takes the same name)",
        )


def validate_update(ws: Workspace, old: Workspace, result: ValidationResult) -> None:
    hint = "; delete and recreate the workspace to change it"
    if (old.inference is None) != (ws.inference is None):
        result.error("inference", f"inference cannot be added or removed once the workspace exists{hint}")
    if (old.tuning is None) != (ws.tuning is None):
        result.error("tuning", f"tuning cannot be added or removed once the workspace exists{hint}")
    old_type, new_type = old.resource.instance_type, ws.resource.instance_type
    if old_type and old_type != new_type:
        result.error(
            "resource.instanceType", f"is immutable: it was {old_type!r}, the update sets {new_type!r}{hint}"
        )
    if old.resource.label_selector != ws.resource.label_selector:
        result.error("resource.labelSelector", f"is immutable{hint}")
    if old.resource.partition != ws.resource.partition:
        result.error("resource.partition", f"is immutable{hint}")
    if old.inference and ws.inference:
        old_preset, new_preset = old.inference.preset, ws.inference.preset
        if old_preset and new_preset and old_preset.name != new_preset.name:
            result.error(
                "inference.preset.name",
                f"is immutable: it was {old_preset.name!r}, the update sets {new_preset.name!r}{hint}",
            )
        if (old_preset is None) != (new_preset is None):
            result.error("inference", f"cannot switch between preset and template{hint}")
    if old.tuning and ws.tuning:
        if old.tuning.preset.name != ws.tuning.preset.name:
            result.error("tuning.preset.name", f"is immutable{hint}")
        if old.tuning.method != ws.tuning.method:
            result.error("tuning.method", f"is immutable{hint}")
        # the Job reads them once: an edit would be silently ignored while the status reported
        # success for the old input (a Job's template cannot change)
        for wire, before, after in (("input", old.tuning.input, ws.tuning.input),
                                    ("output", old.tuning.output, ws.tuning.output),
                                    ("config", old.tuning.config, ws.tuning.config)):
            if before != after:
                result.error(f"tuning.{wire}", f"is immutable: the tuning Job reads it once{hint}")


def validate_spec(
    ws: Workspace, catalog: Catalog, result: ValidationResult, *, check_fit: bool = True,
    mounts: MountPolicy = DEFAULT_MOUNT_POLICY,
) -> None:
    if ws.inference is None and ws.tuning is None:
        result.error("(root)", "specify either inference or tuning; the workspace has neither")
        return
    if ws.inference is not None and ws.tuning is not None:
        result.error("(root)", "specify either inference or tuning, not both")
        return
    instance_type = ws.resource.instance_type
    sku = catalog.sku(instance_type) if instance_type else None
    partitioned = ws.resource.partition is not None
    if not instance_type and not partitioned:
        result.error("resource.instanceType", "is required: name the GPU VM size, e.g. Standard_NC6s_v3")
    elif instance_type and sku is None:
        result.error("resource.instanceType", unknown_sku_message(instance_type, catalog))

    if ws.resource.count > MAX_NODE_COUNT:  # not subject to the bypass annotation
        result.error(
            "resource.count",
            f"{ws.resource.count} nodes is more than one workspace may ask for: set at most {MAX_NODE_COUNT} "
            "(split the load over several workspaces)",
        )
    validate_node_labels(ws.resource.label_selector, result)
    validate_partition(ws, catalog, result)
    bypass = bypasses_resource_checks(ws)
    if ws.inference is not None:
        inf = ws.inference
        if (inf.preset is None) == (inf.template is None):
            result.error(
                "inference", "set exactly one of inference.preset (a catalog model) or inference.template"
            )
        name = inf.preset.name if inf.preset else None
        if name is not None and catalog.preset(name) is None and looks_like_hf_id(name):
            result.warnings.append(uncatalogued_warning(name, catalog))
            preset = None  # the reconciler resolves it (controller/workspace/model_resolver.py)
        else:
            preset = _known_preset(name, "inference.preset.name", catalog, result)
        if preset is not None and (problem := serving_problem(preset, catalog)):
            result.error("inference.preset.name", problem)
        elif preset is not None:
            if preset.hf_auth_required and not (
                inf.preset and inf.preset.preset_options and inf.preset.preset_options.model_access_secret
            ):
                result.warnings.append(
                    f"preset {preset.name} is gated on Hugging Face: set "
                    "inference.preset.presetOptions.modelAccessSecret to a Secret with key HF_TOKEN"
                )
            if warning := unpinned_warning(preset):
                result.warnings.append(warning)
            if sku is not None and check_fit:
                _check_fit(preset, sku, ws.resource.count, None, bypass, result, catalog)
            if check_fit and (problem := mig_fit_problem(ws, preset, catalog)):
                judge_fit(problem, bypass, result, "resource.partition")
        validate_adapters(inf.adapters or [], result, mounts)
    if ws.tuning is not None:
        validate_tuning(ws.tuning, ws.resource.count, sku if check_fit else None, bypass, catalog, result,
                        mounts)


def validate_node_labels(selector: LabelSelector, result: ValidationResult) -> None:
    """matchLabels become the labels of the workspace's Machines and Nodes: valid syntax, and none
    in the domains the cluster trusts (``controller.api.labels``)."""
    for key, value in (selector.match_labels or {}).items():
        path = f"resource.labelSelector.matchLabels[{key[:80]!r}]"
        problem = label_key_problem(key) or node_label_problem(key) or label_value_problem(key, value)
        if problem:
            result.error(path, problem)


def validate_partition(ws: Workspace, catalog: Catalog, result: ValidationResult) -> None:
    """Kaito v0.12's ``resource.partition``: the workspace runs on existing nodes matching its
    label selector (bring-your-own; nothing is provisioned for it), its Ray workers asking for
    ``count`` whole GPUs (mode accelerator) or one MIG slice of ``profile`` (mode mig). The rules
    are Kaito's ``validatePartition``; the fit of an accelerator partition depends on the node's
    GPUs, so the reconciler judges it once it sees a matching node (``controller.workspace.plan``)."""
    part = ws.resource.partition
    if part is None:
        return
    path = "resource.partition"
    if ws.resource.instance_type:
        result.error("resource.instanceType", (
            "must be empty with resource.partition: a partitioned workspace runs on existing nodes "
            "matching resource.labelSelector (nothing is provisioned); remove resource.instanceType, "
            "or remove resource.partition to provision whole GPU nodes of that instance type"))
    if ws.tuning is not None:
        result.error(path, "GPU partitioning is not supported for tuning workloads: "
                           "remove resource.partition")
    if not (ws.resource.label_selector.match_labels or ws.resource.label_selector.match_expressions):
        result.error("resource.labelSelector", "must select the nodes to partition: a partitioned "
                                               "workspace uses existing nodes with these labels")
    if part.mode == "accelerator":
        if part.profile:
            result.error(f"{path}.profile", "is not valid for mode accelerator (whole GPUs): remove it")
        if part.count is None:
            result.error(f"{path}.count", "is required for mode accelerator: the GPUs each replica uses")
        return
    if part.count is not None:
        result.error(f"{path}.count", "is only valid for mode accelerator: a MIG workload runs on one "
                                      "slice of resource.partition.profile; remove it")
    if not part.profile:
        result.error(f"{path}.profile", "is required for mode mig, e.g. 1g.10gb")
    elif part.profile not in catalog.mig_profiles:
        known = ", ".join(sorted(catalog.mig_profiles))
        result.error(f"{path}.profile", f"unknown MIG profile {part.profile!r}: must be one of {known}")


def mig_fit_problem(ws: Workspace, preset: Preset, catalog: Catalog) -> str | None:
    """Why ``preset`` cannot run on one MIG slice of the workspace's profile, or None (also when
    the workspace is not a MIG partition). The slice's GPU is not known before a node is, so the
    oldest GPU offering the profile is assumed; the host memory is judged by the reconciler."""
    part = ws.resource.partition
    profile = catalog.mig_profiles.get(part.profile or "") if part and part.mode == "mig" else None
    if profile is None:
        return None
    try:
        est = estimate_nodes(preset, profile.slice_sku(memory_gib=float("inf")), catalog=catalog)
    except EstimateError as exc:
        return f"{exc.message} (one MIG slice {profile.name}): pick a larger profile, or mode accelerator"
    if est.gpus_needed > 1:
        return (f"{est.message}: a MIG workload runs on exactly one slice; pick a larger profile than "
                f"{profile.name}, or mode accelerator with count {est.gpus_needed}")
    return None


def serving_problem(preset: Preset, catalog: Catalog) -> str | None:
    """Why our engine cannot serve ``preset`` (deprecated, an architecture or a weight format not
    proven through it; see presets/catalog.yaml's ``architectures`` and ``quantizations``), or
    None. Refused at admission rather than failing on the GPUs after the nodes were bought."""
    if preset.deprecated:
        return f"model {preset.name} is deprecated and no longer supported (as in Kaito); pick another preset"
    arch = catalog.architecture(preset.architecture)
    if arch is not None and not arch.supported:
        supported = ", ".join(catalog.supported_architectures())
        return (
            f"preset {preset.name} is a {arch.name} model, which this operator's engine cannot serve yet: "
            f"{arch.why}. Architectures it serves: {supported}"
        )
    quant = catalog.quantizations.get(preset.quantization or "")
    if quant is not None and not quant.supported:
        return (
            f"preset {preset.name} ships {quant.name} weights, which this operator's engine cannot "
            f"serve yet: {quant.why}. Pick a preset with unquantized weights"
        )
    return None


def uncatalogued_warning(name: str, catalog: Catalog) -> str:
    """An ``org/name`` id the catalog does not list is admitted (Kaito v0.12 serves any model whose
    architecture it supports): whether it can be read and served is a network question, which the
    controller answers before buying nodes; admission must not wait on the network."""
    similar = catalog.similar_presets(name)
    hint = f" (did you mean {' or '.join(similar)}?)" if similar else ""
    return (f"inference.preset.name: {name} is not in the catalog{hint}; the controller reads its "
            "config.json from the Hugging Face hub and sizes it; ResourceReady says whether it can be served")


def unpinned_warning(preset: Preset) -> str | None:
    """A warning for a hub preset the catalog pins to no commit: its pods load whatever the repo's
    main branch holds when they start, so a push upstream changes the served model. Said at
    admission so that it is never silent (the catalog says which presets these are and why)."""
    if preset.hf_model_id is None or preset.model_revision is not None or preset.model_path is not None:
        return None
    return (f"preset {preset.name} is not pinned to a Hugging Face commit (Kaito pins none): its pods load "
            f"the main branch of {preset.hf_model_id} as it is when they start")


def _known_preset(name: str | None, path: str, catalog: Catalog, result: ValidationResult) -> Preset | None:
    if name is None:
        return None
    preset = catalog.preset(name)
    if preset is None:
        result.error(path, unknown_preset_message(name, catalog))
    return preset


def _check_fit(
    preset: Preset,
    sku: GpuSku,
    count: int,
    method: str | None,
    bypass: bool,
    result: ValidationResult,
    catalog: Catalog,
) -> None:
    try:
        estimate_nodes(preset, sku, count, tuning_method=method, catalog=catalog)
    except EstimateError as exc:
        judge_fit(exc.message, bypass, result)


def validate_adapters(adapters: list[AdapterSpec], result: ValidationResult,
                      mounts: MountPolicy = DEFAULT_MOUNT_POLICY) -> None:
    if len(adapters) > MAX_ADAPTERS:
        result.error(
            "inference.adapters",
            f"has {len(adapters)} adapters; at most {MAX_ADAPTERS} are allowed: "
            f"remove {len(adapters) - MAX_ADAPTERS}",
        )
    seen: set[str] = set()
    for i, adapter in enumerate(adapters):
        path = f"inference.adapters[{i}]"
        name = adapter.source.name
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            result.error(
                f"{path}.source.name",
                f"{name!r} is not a valid adapter name: use at most 63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit",
            )
        if name in seen:
            result.error(
                f"{path}.source.name", f"duplicate adapter name {name!r}: each adapter needs its own name"
            )
        seen.add(name)
        sources = adapter.source.given_sources()
        if "urls" in sources:
            result.error(
                f"{path}.source.urls", "URLs are not supported for adapters: use image, volumeSource or path"
            )
        elif len(sources) != 1:
            found = ", ".join(sources) if sources else "none"
            result.error(f"{path}.source", f"set exactly one of image, volumeSource or path (found: {found})")
        validate_mountable(path + ".source", adapter.source.volume_source, adapter.source.path, result,
                           mounts=mounts)
        validate_pull_secrets(f"{path}.source", adapter.source, result)
        try:
            strength = float(adapter.strength)
        except ValueError:
            strength = float("nan")
        if not 0.0 <= strength <= 1.0:  # also false for NaN
            result.error(
                f"{path}.strength",
                f'{adapter.strength!r} for adapter {name!r} must be a number between 0 and 1, e.g. "0.5"',
            )


def validate_tuning(
    tuning: TuningSpec,
    count: int,
    sku: GpuSku | None,
    bypass: bool,
    catalog: Catalog,
    result: ValidationResult,
    mounts: MountPolicy = DEFAULT_MOUNT_POLICY,
) -> None:
    """The tuning rules; ``sku`` None (unknown, or the caller estimates itself) skips the fit."""
    preset = _known_preset(tuning.preset.name, "tuning.preset.name", catalog, result)
    if preset is not None and not preset.supports_tuning:
        tunable = sorted(p.name for p in catalog.presets.values() if p.supports_tuning)
        result.error(
            "tuning.preset.name",
            f"preset {preset.name} does not support tuning; tunable presets: {', '.join(tunable)}",
        )
        preset = None
    if count != 1:
        result.error(
            "resource.count", f"tuning runs on a single node: set resource.count to 1 (it is {count})"
        )
    if preset is not None and sku is not None:
        _check_fit(preset, sku, 1, tuning.method, bypass, result, catalog)

    sources = tuning.input.given_sources()
    if len(sources) != 1:
        found = ", ".join(sources) if sources else "none"
        result.error("tuning.input", f"set exactly one of urls, image, volumeSource or path (found: {found})")
    validate_mountable("tuning.input", tuning.input.volume_source, tuning.input.path, result, mounts=mounts)
    validate_pull_secrets("tuning.input", tuning.input, result)
    validate_mountable("tuning.output", tuning.output.volume_source, tuning.output.path, result,
                       allowed=OUTPUT_VOLUME_TYPES, mounts=mounts)
    for j, url in enumerate(tuning.input.urls or []):
        problem = url_problem(url)
        if problem:
            result.error(f"tuning.input.urls[{j}]", problem)
    dests = tuning.output.given_destinations()
    if len(dests) != 1:
        found = ", ".join(dests) if dests else "none"
        result.error("tuning.output", f"set exactly one of image, volumeSource or path (found: {found})")
    if tuning.output.image and not tuning.output.image_push_secret:
        result.error(
            "tuning.output.imagePushSecret",
            "is required with tuning.output.image: name a docker-registry Secret that may push to it",
        )


def validate_mountable(
    path: str,
    volume_source: Any,
    node_path: str | None,
    result: ValidationResult,
    *,
    allowed: tuple[str, ...] = INPUT_VOLUME_TYPES,
    mounts: MountPolicy = DEFAULT_MOUNT_POLICY,
) -> None:
    """A data source's volume and node path become volumes of the controller's pods: only the
    types and directories ``controller.api.datasources`` allows, under the operator's ``mounts``."""
    if volume_source:
        problem = volume_source_problem(volume_source, allowed, mounts)
        if problem:
            result.error(f"{path}.volumeSource", problem)
    if node_path:
        problem = node_path_problem(node_path, mounts.node_path_prefix)
        if problem:
            result.error(f"{path}.path", problem)


def validate_pull_secrets(path: str, src: DataSource, result: ValidationResult) -> None:
    """imagePullSecrets name Secrets the pod pulls the source's image with: only with an image
    (anywhere else they would be accepted and never used), each a Secret name."""
    secrets = src.image_pull_secrets or []
    if secrets and not src.image:
        result.error(f"{path}.imagePullSecrets", "is only used with image: remove it, or give an image")
    for i, name in enumerate(secrets):
        if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
            result.error(f"{path}.imagePullSecrets[{i}]", f"{name[:80]!r} is not a Secret name")


def url_problem(url: str) -> str | None:
    """Why a dataset URL is refused at admission (not http(s), or its literal host, numeric IPv4
    forms included, is private, local or cloud-internal), or None. Names are not resolved here;
    the trainer resolves and checks every address, redirects included (``rayserve.tuning.netguard``)."""
    return netguard.url_problem(url, resolve=None)
