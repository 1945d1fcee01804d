"""Shared Kubernetes API shapes: the model base class, ObjectMeta, LabelSelector and metav1.Condition.

Every model serialises with the Kubernetes camelCase names (``to_k8s()``) and parses the API server's
dicts (``from_k8s()``); Python code uses snake_case attributes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_serializer
from pydantic.alias_generators import to_camel

ConditionStatus = Literal["True", "False", "Unknown"]

# metav1.Condition's OpenAPI constraints (k8s.io/apimachinery/pkg/apis/meta/v1/types.go markers).
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


class K8sModel(BaseModel):
    """Base for every API shape: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    @classmethod
    def from_k8s(cls, obj: dict[str, Any]) -> Self:
        return cls.model_validate(obj)

    def to_k8s(self) -> dict[str, Any]:
        """The dict the API server expects: camelCase keys, no ``None`` values."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class LooseModel(K8sModel):
    """A shape whose unknown fields are kept (round-tripped) rather than dropped."""

    model_config = ConfigDict(extra="allow")


class OwnerReference(K8sModel):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(LooseModel):
    """metav1.ObjectMeta: the fields controllers read; everything else (managedFields...) is kept."""

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    finalizers: list[str] | None = None
    owner_references: list[OwnerReference] | None = None


# Bounds of a label selector in a CRD schema only (see controller.api.workspace's MAX_URLS): a
# label key is at most 317 characters (253 prefix, '/', 63 name), a value 63.
MAX_SELECTOR_TERMS = 64


class LabelSelectorRequirement(K8sModel):
    key: str = Field(json_schema_extra={"maxLength": 317})
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = Field(
        default=None,
        json_schema_extra={"maxItems": MAX_SELECTOR_TERMS, "items": {"type": "string", "maxLength": 63}},
    )


class LabelSelector(K8sModel):
    """metav1.LabelSelector."""

    match_labels: dict[str, str] | None = Field(
        default=None,
        json_schema_extra={"maxProperties": MAX_SELECTOR_TERMS,
                           "additionalProperties": {"type": "string", "maxLength": 63}},
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, json_schema_extra={"maxItems": MAX_SELECTOR_TERMS}
    )


def _now() -> datetime:
    # metav1.Time has second precision; keep ours the same so a write reads back unchanged.
    return datetime.now(UTC).replace(microsecond=0)


class Condition(K8sModel):
    """metav1.Condition. ``last_transition_time`` may be left ``None`` when passed to ``set_condition``."""

    model_config = ConfigDict(
        json_schema_extra={"required": ["type", "status", "lastTransitionTime", "reason", "message"]}
    )

    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)
    status: ConditionStatus
    observed_generation: int | None = Field(default=None, ge=0)
    last_transition_time: datetime | None = None
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    message: str = Field(default="", max_length=32768)

    @field_serializer("last_transition_time")
    def _rfc3339(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def is_true(self) -> bool:
        return self.status == "True"


# --- condition helpers, with apimachinery meta.SetStatusCondition semantics ---------------------------


def find_condition(conditions: list[Condition] | None, type_: str) -> Condition | None:
    for cond in conditions or ():
        if cond.type == type_:
            return cond
    return None


def is_condition_true(conditions: list[Condition] | None, type_: str) -> bool:
    cond = find_condition(conditions, type_)
    return cond is not None and cond.status == "True"


def set_condition(conditions: list[Condition], new: Condition, now: datetime | None = None) -> bool:
    """Insert or update ``new`` in ``conditions`` in place; return whether anything changed.

    As meta.SetStatusCondition: lastTransitionTime moves only when the status changes (to
    ``new.last_transition_time`` if given, else now); reason, message and observedGeneration are
    always taken from ``new``.
    """
    existing = find_condition(conditions, new.type)
    if existing is None:
        added = new.model_copy()
        if added.last_transition_time is None:
            added.last_transition_time = now or _now()
        conditions.append(added)
        return True
    changed = False
    if existing.status != new.status:
        existing.status = new.status
        existing.last_transition_time = new.last_transition_time or now or _now()
        changed = True
    for field in ("reason", "message", "observed_generation"):
        value = getattr(new, field)
        if getattr(existing, field) != value:
            setattr(existing, field, value)
            changed = True
    return changed


def remove_condition(conditions: list[Condition], type_: str) -> bool:
    """Remove the condition of ``type_``; return whether it was there."""
    for i, cond in enumerate(conditions):
        if cond.type == type_:
            del conditions[i]
            return True
    return False


class K8sObject(K8sModel):
    """A top-level object: apiVersion, kind, metadata. Subclasses set GROUP/VERSIONS/KIND/PLURAL."""

    GROUP: ClassVar[str]
    VERSIONS: ClassVar[tuple[str, ...]]  # the last is the storage version
    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    NAMESPACED: ClassVar[bool] = True

    api_version: str
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @classmethod
    def storage_api_version(cls) -> str:
        return f"{cls.GROUP}/{cls.VERSIONS[-1]}"

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    @property
    def key(self) -> str:
        """``ns/name`` (or ``name`` when cluster-scoped), as controller.runtime.object_key."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def conditions(self) -> list[Condition] | None:
        """``status.conditions`` for kinds that have them (None while there is no status)."""
        return getattr(getattr(self, "status", None), "conditions", None)

    def condition(self, type_: str) -> Condition | None:
        return find_condition(self.conditions, type_)

    def is_condition_true(self, type_: str) -> bool:
        return is_condition_true(self.conditions, type_)

    def owner_reference(self, controller: bool = True) -> OwnerReference:
        """An ownerReference pointing at this object (it must have a uid, i.e. come from the server)."""
        if not self.metadata.uid:
            raise ValueError(f"{self.KIND} {self.key} has no uid yet; read it from the API server first")
        return OwnerReference(
            api_version=self.api_version,
            kind=self.kind,
            name=self.name,
            uid=self.metadata.uid,
            controller=controller,
            block_owner_deletion=True,
        )
