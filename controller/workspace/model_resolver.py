"""A Hugging Face model id the catalog does not list, resolved into a preset (or a reason it cannot be).

Why in the reconciler and not in the admission webhook: resolving reads the hub over the network
(the repo's info, its config.json, its safetensors headers; a second or more, a timeout when the
hub is down), and an admission webhook must answer in a fixed time whatever the network does (the
API server gives it 10 s, then fails the request or lets it through, per failurePolicy). A repo
may also become readable later (access granted, a token added to the Secret, the hub back up),
which only a controller that retries notices. So the webhook admits any syntactically valid
``org/name`` id (controller/api/validation.py) and the reconciler resolves it here before any
Machine is created: the nodes are sized from the checkpoint, and a model that cannot be served
never buys a GPU.

Cached per (model id, token): a resolved model stays resolved for this process's life (a running
workspace must not lose its plan because the hub is down for a minute; a restarted controller
finds what it resolved in the Workspace's status, model_record.py), and a failure is kept until
its retry time, which doubles per failure (10 s up to 5 min by default), so events on the
Workspace do not turn into requests to the hub.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from controller.workspace.hf_hub import (
    ENTRY_NOT_FOUND,
    GATED,
    REPO_NOT_FOUND,
    REVISION_NOT_FOUND,
    UNREACHABLE,
    HubClient,
    HubError,
)
from presets.estimator import kv_bytes_per_token
from presets.hf_config import REASON_CONFIG_INVALID, ModelConfigError, Weights, preset_from_config
from presets.registry import Catalog, Preset, _num, default_catalog

log = logging.getLogger(__name__)

REASON_MODEL_RESOLVED = "ModelResolved"
REASON_MODEL_NOT_FOUND = "ModelNotFound"
REASON_MODEL_ACCESS_DENIED = "ModelAccessDenied"
REASON_HUB_UNREACHABLE = "ModelHubUnreachable"
COMMIT = re.compile(r"[0-9a-f]{40}")  # a hub commit sha: what a preset may pin


@dataclass(frozen=True)
class ResolvedModel:
    preset: Preset
    revision: str  # the commit sha the hub reported: what the serve pods load (model_record.py)
    summary: str  # for ResourceReady: what was read and what it says
    endpoint: str = ""  # the hub it was read from


@dataclass(frozen=True)
class ModelProblem:
    """Why the model cannot be planned (yet): a ResourceReady reason and message, and when to look again.

    ``failed``: a problem of the model or its access (Failed until something changes), as opposed to
    the hub not answering (Pending)."""

    reason: str
    message: str
    retry_in: float
    failed: bool = True


def describe(preset: Preset, weights: Weights, revision: str, endpoint: str) -> str:
    per_token = kv_bytes_per_token(preset, preset.dtype)
    kv = f", KV cache {_num(round(per_token / 1024, 2))} KiB per token" if per_token else ""
    dtypes = "+".join(sorted(weights.params_by_dtype))
    return (
        f"Sized from {preset.hf_model_id}'s config.json and safetensors headers on {endpoint} (revision "
        f"{revision[:12]}): {preset.architecture}, {_params(weights.params)} parameters ({dtypes}, "
        f"{_num(round(preset.weights_gib, 3))} GiB), {preset.dtype}{kv}, context {preset.max_context} tokens."
    )


def _params(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{_num(round(n / size, 2))}{unit}"
    return str(n)


@dataclass
class _Failure:
    problem: ModelProblem
    attempts: int
    next_at: float


class ModelResolver:
    """``resolve(model id, token)`` -> ResolvedModel or ModelProblem, cached (see the module docstring)."""

    def __init__(self, hub: HubClient, catalog: Catalog | None = None, *, backoff_seconds: float = 10.0,
                 backoff_max_seconds: float = 300.0, max_entries: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.catalog = catalog or default_catalog()
        self.backoff, self.backoff_max = backoff_seconds, backoff_max_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._resolved: OrderedDict[tuple[str, str, str], ResolvedModel] = OrderedDict()
        self._failed: dict[tuple[str, str, str], _Failure] = {}
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return self.hub.endpoint

    def resolve(self, model_id: str, token: str | None, *, secret: str | None = None
                ) -> tuple[ResolvedModel | ModelProblem, bool]:
        """The model, or why not; and whether this call read the hub (a fresh answer, worth an Event).
        ``secret``: the Secret the token came from (named in messages), None when there is none."""
        key = _key(model_id, token, secret)
        now = self.clock()
        with self._lock:
            if (hit := self._resolved.get(key)) is not None:
                self._resolved.move_to_end(key)
                return hit, False
            failure = self._failed.get(key)
            if failure is not None and now < failure.next_at:
                # the message as first written: a status that changed on every pass would wake
                # the reconciler again at once (its own status write is a Workspace event)
                return replace(failure.problem, retry_in=failure.next_at - now), False
        outcome = self._read(model_id, token, secret)
        with self._lock:
            if isinstance(outcome, ResolvedModel):
                self._failed.pop(key, None)
                self._resolved[key] = outcome
                while len(self._resolved) > self.max_entries:
                    self._resolved.popitem(last=False)
                return outcome, True
            attempts = (failure.attempts if failure else 0) + 1
            delay = min(self.backoff * 2 ** (attempts - 1), self.backoff_max)
            problem = replace(outcome, message=f"{outcome.message} (attempt {attempts}; trying again in "
                                               f"{delay:.0f}s)", retry_in=delay)
            self._failed[key] = _Failure(problem, attempts, now + delay)
            if len(self._failed) > self.max_entries:
                self._failed.pop(next(iter(self._failed)))
            return problem, True

    def _read(self, model_id: str, token: str | None, secret: str | None) -> ResolvedModel | ModelProblem:
        where = self.hub.endpoint
        try:
            info = self.hub.repo_info(model_id, token)
            config = self.hub.json_file(model_id, info.sha, "config.json", token)
            weights = Weights.from_headers(self.hub.safetensors_headers(info, token))
            preset = preset_from_config(model_id, config, weights, self.catalog, gated=info.gated)
            if COMMIT.fullmatch(info.sha):  # pinned to the commit it was sized from (model_record.py)
                preset = preset.model_copy(update={"revision": info.sha})
        except ModelConfigError as exc:
            return ModelProblem(exc.reason, str(exc), 0.0)
        except HubError as exc:
            log.info("model %s on %s: %s (%s)", model_id, where, exc.code, exc)
            return self._problem(model_id, exc, token, secret)
        return ResolvedModel(preset, info.sha, describe(preset, weights, info.sha, where), where)

    def _problem(self, model_id: str, exc: HubError, token: str | None, secret: str | None) -> ModelProblem:
        where = self.hub.endpoint
        if exc.code == GATED:
            if token is None:
                how = (f"Secret {secret!r} has no HF_TOKEN key or does not exist" if secret else
                       "set inference.preset.presetOptions.modelAccessSecret to a Secret with key HF_TOKEN")
                return ModelProblem(REASON_MODEL_ACCESS_DENIED,
                                    f"{model_id} is a gated repo on {where} and no token was given: {how}",
                                    0.0)
            return ModelProblem(REASON_MODEL_ACCESS_DENIED,
                                f"{model_id} is a gated repo on {where} and the HF_TOKEN of Secret "
                                f"{secret!r} has no access to it ({exc}): request access on the Hub, or use "
                                "a token that has it", 0.0)
        if exc.code in (REPO_NOT_FOUND, REVISION_NOT_FOUND):
            similar = self.catalog.similar_presets(model_id)
            hint = f" Did you mean {' or '.join(similar)}?" if similar else ""
            return ModelProblem(REASON_MODEL_NOT_FOUND,
                                f"{model_id} is not a preset in the catalog nor a model repo on {where} "
                                f"(or it is private and the token cannot see it).{hint}", 0.0)
        if exc.code == ENTRY_NOT_FOUND:
            return ModelProblem(REASON_CONFIG_INVALID,
                                f"{model_id} on {where} has no config.json: not a transformers checkpoint",
                                0.0)
        if exc.code == UNREACHABLE:
            return ModelProblem(REASON_HUB_UNREACHABLE,
                                f"cannot read {model_id}'s config.json from {where}: {exc}", 0.0,
                                failed=False)
        return ModelProblem(REASON_CONFIG_INVALID, f"{model_id} on {where}: {exc}", 0.0)


def _key(model_id: str, token: str | None, secret: str | None) -> tuple[str, str, str]:
    """The token by its hash (the cache holds no credential); the Secret's name since messages name it."""
    return model_id.lower(), hashlib.sha256(token.encode()).hexdigest()[:16] if token else "", secret or ""

