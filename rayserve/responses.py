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
from rayserve.service import Chunk, Completion, TokenLogprob

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


def completion_body(
    obj: str, ident: str, created: int, name: str, choices: list[dict], prompt: int, n: int
) -> dict:
    """A whole (non-streamed) ``chat.completion`` or ``text_completion``; ``n`` counts the
    tokens of every choice."""
    return {
        "id": ident,
        "object": obj,
        "created": created,
        "model": name,
        "choices": choices,
        "usage": usage(prompt, n),
    }


def _entry(token: str, logprob: float, raw: bytes) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(raw)}


def chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's ``logprobs``: one ``content`` entry per token, with its alternatives."""
    return {
        "content": [
            {**_entry(e.token, e.logprob, e.bytes), "top_logprobs": [_entry(*t) for t in e.top]}
            for e in entries
        ]
    }


def completion_logprobs(entries: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """A text completion's ``logprobs`` (the legacy shape): parallel lists of tokens, their
    log probabilities, their alternatives and where each token starts in the text."""
    offsets, at = [], offset
    for e in entries:
        offsets.append(at)
        at += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t: lp for t, lp, _ in e.top} for e in entries],
        "text_offset": offsets,
    }


def chat_choice(index: int, c: Completion, logprobs: bool) -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "content": c.text},
        "logprobs": chat_logprobs(c.logprobs) if logprobs else None,
        "finish_reason": c.finish_reason,
    }


def completion_choice(index: int, c: Completion, prefix: str, logprobs: bool) -> dict[str, Any]:
    return {
        "index": index,
        "text": prefix + c.text,
        "logprobs": completion_logprobs(c.logprobs, len(prefix)) if logprobs else None,
        "finish_reason": c.finish_reason,
    }


async def chat_events(
    chunks: AsyncIterator[tuple[int, Chunk]],
    ident: str,
    created: int,
    name: str,
    prompt_len: int,
    include_usage: bool,
    choices: int = 1,
    logprobs: bool = False,
) -> AsyncIterator[str]:
    """``chat.completion.chunk`` events: the role first (for each choice), then content
    deltas (with their tokens' log probabilities when asked), each choice's finish reason,
    optionally usage, and ``[DONE]``."""
    base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name}
    for i in range(choices):
        yield sse({**base, "choices": [{"index": i, "delta": {"role": "assistant"}, "finish_reason": None}]})
    counts = [0] * choices
    async with aclosing(chunks):
        async for i, c in chunks:
            counts[i] = c.completion_tokens
            delta = {"content": c.text} if c.text else {}
            if delta or c.finish_reason:
                choice = {"index": i, "delta": delta, "finish_reason": c.finish_reason}
                if logprobs:
                    choice["logprobs"] = chat_logprobs(c.logprobs)
                yield sse({**base, "choices": [choice]})
    if include_usage:
        yield sse({**base, "choices": [], "usage": usage(prompt_len, sum(counts))})
    yield DONE


async def completion_events(
    chunks: AsyncIterator[tuple[int, Chunk]],
    ident: str,
    created: int,
    name: str,
    prefix: str,
    choices: int = 1,
    logprobs: bool = False,
) -> AsyncIterator[str]:
    """``text_completion`` events: the echoed prompt (if any), text deltas, ``[DONE]``."""
    base = {"id": ident, "object": "text_completion", "created": created, "model": name}
    offsets = [0] * choices
    if prefix:
        for i in range(choices):
            choice = {"index": i, "text": prefix, "finish_reason": None, "logprobs": None}
            yield sse({**base, "choices": [choice]})
            offsets[i] = len(prefix)
    async with aclosing(chunks):
        async for i, c in chunks:
            if c.text or c.finish_reason:
                lp = completion_logprobs(c.logprobs, offsets[i]) if logprobs else None
                offsets[i] += len(c.text)
                choice = {"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": lp}
                yield sse({**base, "choices": [choice]})
    yield DONE
