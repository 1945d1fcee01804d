"""The data plane: a Ray Serve application that serves a causal LM (Kaito's ``/chat`` and the
OpenAI API) with pipeline-parallel sharding, continuous batching, LoRA adapters, autoscaling
and Prometheus metrics - and the builder of the ``serveConfigV2`` a RayService carries.

No Kubernetes code is imported anywhere in this package. Modules, each with one job:

- ``spec``: pydantic contract (ModelSpec, AdapterSpec, ParallelSpec, EngineSpec, ServeArgs)
- ``builder``: ServeConfigInput -> serveConfigV2 YAML (pure; used by the controller)
- ``loading``: from_pretrained with one dtype/device rule; ``adapters``: peft LoRA per row
- ``kvcache`` + ``stage``: a layer slice with its own batched KV cache
- ``pipeline``: all stages in-process, or one Ray actor per stage in a placement group
- ``sequence``: the engine's vocabulary (Sequence, TokenEvent, FinishReason, EngineClient)
- ``scheduler``: pure admission / row / cache-op decisions (no torch); ``cacheops``: the ops
- ``engine``: the continuous-batching loop; ``engine_group``: batches in flight over a
  sharded pipeline so stages overlap; ``params`` + ``sampling``: per-row sampling
- ``service``: prepares any request (routing, tokens, context limits, ``SamplingParams``)
  and streams its text; ``text``: templates, detokenizing
- ``schemas``: HTTP bodies, each saying what it asks of generation; ``errors``: RequestError
- ``app``: the FastAPI ingress deployment (``build_app``), which only parses, formats
  (``responses``) and records each request's status
- ``metrics``: kaito_llm_* via ray.util.metrics; ``tuning``: ``python -m rayserve.tuning``
"""
