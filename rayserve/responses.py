"""The answers' shapes: OpenAI bodies, server-sent event streams and error bodies.

Why apart from the routes: what a client receives is a format with its own rules (the first
chat chunk carries the role, usage comes last and only when asked for, a stream ends with
``[DONE]``); written as pure functions over the service's chunks it can be read, and
changed, without the ingress's parsing and bookkeeping around it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from rayserve.errors import RequestError
from rayserve.service import Chunk

DONE = "data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def error_body(e: RequestError) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.status}}


def error_event(e: RequestError) -> str:
    """A failure after a stream began (status 200 already sent), as vLLM reports it: an
    ``error`` event and the end of the stream, so clients raise instead of hanging."""
    return sse(error_body(e)) + DONE


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(obj: str, ident: str, created: int, name: str, choice: dict, prompt: int, n: int) -> dict:
    """A whole (non-streamed) ``chat.completion`` or ``text_completion``."""
    return {
        "id": ident,
        "object": obj,
        "created": created,
        "model": name,
        "choices": [choice],
        "usage": usage(prompt, n),
    }


async def chat_events(
    chunks: AsyncIterator[Chunk], ident: str, created: int, name: str, prompt_len: int, include_usage: bool
) -> AsyncIterator[str]:
    """``chat.completion.chunk`` events: the role first, then content deltas, the finish
    reason, optionally usage, and ``[DONE]``."""
    base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name}
    yield sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
    n = 0
    async with aclosing(chunks):
        async for c in chunks:
            n = c.completion_tokens
            delta = {"content": c.text} if c.text else {}
            if delta or c.finish_reason:
                yield sse(
                    {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": c.finish_reason}]}
                )
    if include_usage:
        yield sse({**base, "choices": [], "usage": usage(prompt_len, n)})
    yield DONE


async def completion_events(
    chunks: AsyncIterator[Chunk], ident: str, created: int, name: str, prefix: str
) -> AsyncIterator[str]:
    """``text_completion`` events: the echoed prompt (if any), text deltas, ``[DONE]``."""
    base = {"id": ident, "object": "text_completion", "created": created, "model": name}
    if prefix:
        yield sse(
            {**base, "choices": [{"index": 0, "text": prefix, "finish_reason": None, "logprobs": None}]}
        )
    async with aclosing(chunks):
        async for c in chunks:
            if c.text or c.finish_reason:
                choice = {"index": 0, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
                yield sse({**base, "choices": [choice]})
    yield DONE
