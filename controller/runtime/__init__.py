"""controller.runtime: a generic, hand-rolled port of client-go tools/cache + util/workqueue and
controller-runtime. It knows no Workspace; see docs/runtime-api.md for the public API."""

from controller.runtime.client import (
    AlreadyExists,
    ApiError,
    Client,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    ResourceKind,
    WatchStream,
)
from controller.runtime.controller import Controller, Reconciler, Request, Result
from controller.runtime.events import EventRecorder
from controller.runtime.informer import EventHandler, Informer, SharedInformerFactory
from controller.runtime.leaderelection import LEASES, LeaderElector
from controller.runtime.manager import Manager
from controller.runtime.probes import ProbeServer
from controller.runtime.ratelimiter import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)
from controller.runtime.store import DeletedFinalStateUnknown, Store, object_key, split_key
from controller.runtime.workqueue import DelayingQueue, Queue, RateLimitingQueue

__all__ = [
    "LEASES",
    "AlreadyExists",
    "ApiError",
    "BucketRateLimiter",
    "Client",
    "Conflict",
    "Controller",
    "DelayingQueue",
    "DeletedFinalStateUnknown",
    "EventHandler",
    "EventRecorder",
    "Gone",
    "Informer",
    "Invalid",
    "ItemExponentialFailureRateLimiter",
    "LeaderElector",
    "Manager",
    "MaxOfRateLimiter",
    "NotFound",
    "ProbeServer",
    "Queue",
    "RateLimitingQueue",
    "Reconciler",
    "Request",
    "ResourceKind",
    "Result",
    "SharedInformerFactory",
    "Store",
    "WatchStream",
    "default_controller_rate_limiter",
    "object_key",
    "split_key",
]
