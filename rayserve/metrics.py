"""The serve app's own Prometheus metrics, exported by Ray beside its ``ray_serve_*`` ones.

Why through ``ray.util.metrics``: every replica (and stage actor) is a Ray worker, and Ray's
per-node metrics agent already aggregates and serves worker metrics on the node's
``metrics-export-port`` (8080 in KubeRay pods, scraped by the PodMonitor). Names get a
``ray_`` prefix on export, e.g. ``ray_kaito_llm_requests_total``.

What is measured: requests (by route, model, HTTP status - every status, errors included,
499 for a client that left), end-to-end latency, time to first token, generated and prompt
tokens, the engine's batch size per forward, and its queue depth (waiting) and running
sequences.
"""

from __future__ import annotations

from ray.util import metrics as rm

from rayserve.engine import EngineStats

_LATENCY_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
_BATCH = [1, 2, 4, 8, 16, 32, 64, 128]


class ServeMetrics:
    """One set per replica; ``tags`` identify the deployment."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.requests = rm.Counter(
            "kaito_llm_requests_total",
            description="Requests answered, by route, model and HTTP status.",
            tag_keys=("route", "model", "status"),
        )
        self.latency = rm.Histogram(
            "kaito_llm_request_latency_seconds",
            description="Time from request to last byte.",
            boundaries=_LATENCY_S,
            tag_keys=("route", "model"),
        )
        self.ttft = rm.Histogram(
            "kaito_llm_time_to_first_token_seconds",
            description="Time from engine submission to the first generated token.",
            boundaries=_LATENCY_S,
            tag_keys=("model",),
        )
        self.generated = rm.Counter(
            "kaito_llm_generated_tokens_total", description="Tokens generated.", tag_keys=("model",)
        )
        self.prompt_tokens = rm.Counter(
            "kaito_llm_prompt_tokens_total", description="Prompt tokens processed.", tag_keys=("model",)
        )
        self.batch_size = rm.Histogram(
            "kaito_llm_batch_size",
            description="Sequences per model forward (prefill or decode step).",
            boundaries=_BATCH,
            tag_keys=("model",),
        )
        self.waiting = rm.Gauge(
            "kaito_llm_queue_depth", description="Requests waiting for a batch slot.", tag_keys=("model",)
        )
        self.running = rm.Gauge(
            "kaito_llm_running_sequences", description="Sequences in the running batch.", tag_keys=("model",)
        )

    def request(self, route: str, model: str, status: int, seconds: float, prompt_tokens: int = 0) -> None:
        """One finished request; ``model`` is a served name (never a caller's unknown one, so
        the label set stays bounded)."""
        self.requests.inc(1, tags={"route": route, "model": model, "status": str(status)})
        self.latency.observe(seconds, tags={"route": route, "model": model})
        if prompt_tokens:
            self.prompt_tokens.inc(prompt_tokens, tags={"model": self.model})

    def engine_stats(self) -> EngineStats:
        tags = {"model": self.model}

        def on_queue(waiting: int, running: int) -> None:
            self.waiting.set(waiting, tags=tags)
            self.running.set(running, tags=tags)

        return EngineStats(
            on_batch=lambda n: self.batch_size.observe(n, tags=tags),
            on_queue=on_queue,
            on_first_token=lambda s: self.ttft.observe(s, tags=tags),
            on_tokens=lambda n: self.generated.inc(n, tags=tags),
        )
