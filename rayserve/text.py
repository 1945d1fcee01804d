"""Text <-> tokens at the edges of a request: chat templates, streaming detokenization and
stop strings.

Why separate from the engine: the engine decodes token ids only. Turning them back into text
while streaming has two traps handled here - a multi-byte character split across tokens must
not be emitted half-done (byte-level BPE yields U+FFFD until the rest arrives), and a stop
string must not leak its first characters before we know it is one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache


def render_chat(tokenizer, messages: Sequence[tuple[str, str]]) -> str:
    """The prompt text for ``(role, content)`` messages, via the model's chat template."""
    msgs = [{"role": r, "content": c} for r, c in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return "".join(f"{r}: {c}\n" for r, c in messages) + "assistant: "


def encode(tokenizer, text: str, chat: bool) -> list[int]:
    """Token ids of ``text``; a rendered chat prompt already carries its special tokens."""
    return list(tokenizer(text, add_special_tokens=not chat)["input_ids"])


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable character standing for each byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = list(bs), 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_bytes(tokenizer, token_id: int) -> bytes:
    """The bytes one token stands for, also when it is part of a character (decoding it alone
    gives U+FFFD then): what OpenAI's ``logprobs[].bytes`` carries. Byte-level BPE pieces map
    back through GPT-2's alphabet, SentencePiece byte pieces (``<0xE2>``) are that byte, and
    anything else is its decoded text."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if isinstance(piece, str):
        if m := _BYTE_PIECE.fullmatch(piece):
            return bytes([int(m.group(1), 16)])
        table = _byte_decoder()
        if piece and all(ch in table for ch in piece):
            return bytes(table[ch] for ch in piece)
    return tokenizer.decode([token_id], skip_special_tokens=False).encode()


class IncrementalDecoder:
    """Feeds token ids, returns newly completed text, in O(1) work per token.

    Why offsets (vLLM's ``detokenize_incrementally``, TGI's ``decode_token``): decoding every
    generated id again for each new token is O(n^2) per sequence, on the replica's event
    loop, so one long generation stalls every other stream of the replica. Only a short
    window is decoded instead: ``ids[prefix:read]`` is text already emitted, kept as left
    context because decoding a token alone can differ from decoding it after its neighbours
    (SentencePiece drops a leading space, byte-level BPE splits characters); the text of
    ``ids[prefix:]`` past that context is the new delta. The window slides once a delta is
    emitted; until then (an incomplete character, U+FFFD) it grows by one token at a time.
    Concatenated deltas equal one decode of all ids."""

    def __init__(self, tokenizer, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read] were emitted, and are decoded again as context
        self.read = 0  # ids[read:] are not emitted yet

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip) if ids else ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        context = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        if len(text) <= len(context) or text.endswith("\ufffd"):
            return ""  # nothing new yet, or wait for the rest of the character
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(context) :]

    def flush(self) -> str:
        """What is still held back (an incomplete character stays as U+FFFD)."""
        context = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return text[len(context) :]


class StopMatcher:
    """Holds back text that could be the start of a stop string; reports a hit."""

    def __init__(self, stops: Sequence[str] | None) -> None:
        self.stops = [s for s in (stops or []) if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Text safe to emit after ``delta``; sets ``stopped`` when a stop string appeared."""
        if self.stopped:
            return ""
        if not self.stops:
            return delta
        self.buffer += delta
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.buffer = self.buffer[:cut], ""
            return out
        safe = len(self.buffer) - self.hold
        if safe <= 0:
            return ""
        out, self.buffer = self.buffer[:safe], self.buffer[safe:]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out
