"""controller.runtime: a generic, hand-rolled port of client-go tools/cache + util/workqueue and
controller-runtime. It knows no Workspace; see docs/runtime-api.md for the public API."""

from controller.runtime.client import (
    AlreadyExists,
    ApiError,
    Client,
    Conflict,
    EventStream,
    Gone,
    Invalid,
    NotFound,
    ResourceKind,
)
from controller.runtime.controller import Controller, Reconciler, Request, Result
from controller.runtime.events import EventRecorder, ObjectReference, as_reference
from controller.runtime.informer import EventHandler, Informer, SharedInformerFactory
from controller.runtime.leaderelection import LEASES, LeaderElector
from controller.runtime.manager import Manager
from controller.runtime.object_reconciler import ObjectReconciler
from controller.runtime.probes import ProbeServer
from controller.runtime.ratelimiter import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    default_controller_rate_limiter,
)
from controller.runtime.rest import RestClient, WatchStream
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
    "EventStream",
    "Gone",
    "Informer",
    "Invalid",
    "ItemExponentialFailureRateLimiter",
    "LeaderElector",
    "Manager",
    "MaxOfRateLimiter",
    "NotFound",
    "ObjectReconciler",
    "ObjectReference",
    "ProbeServer",
    "Queue",
    "RateLimiter",
    "RateLimitingQueue",
    "Reconciler",
    "Request",
    "ResourceKind",
    "RestClient",
    "Result",
    "SharedInformerFactory",
    "Store",
    "WatchStream",
    "as_reference",
    "default_controller_rate_limiter",
    "object_key",
    "split_key",
]
