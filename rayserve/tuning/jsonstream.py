"""JSON rows read incrementally from a text stream: a JSON array's items, or whitespace-separated
values (JSON Lines, a single object), never the whole document at once.

Why: a ``.json`` dataset was read into one string and parsed into one document, so a file of a
few GB (within the download cap) needed several times that in memory before the first row was
checked. Here the stream is read in chunks into a buffer that holds at most one row (plus a
chunk): each row is decoded with ``json.JSONDecoder.raw_decode`` as soon as it is complete, and a
row longer than ``max_row_chars`` is an error instead of an unbounded buffer. Stdlib only (ijson
is not a dependency of the image, and rows are small: the scan is linear in practice, with the
buffer doubling while a row is incomplete).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TextIO

__all__ = ["MAX_ROW_CHARS", "JsonStreamError", "json_rows"]

MAX_ROW_CHARS = 64 * 2**20  # one conversation; dolly-15k's longest row is ~30k characters
CHUNK_CHARS = 1 << 16
_WHITESPACE = " \t\n\r"


class JsonStreamError(ValueError):
    """Malformed JSON, or a row over the limit; ``where`` is "row 3" (array) or "line 3"."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


class _Buffer:
    """The unread part of the stream, and the line number of its first character."""

    def __init__(self, stream: TextIO, chunk: int, max_row: int) -> None:
        self.stream, self.chunk, self.max_row = stream, chunk, max_row
        self.text, self.pos, self.line, self.eof = "", 0, 1, False
        self.decoder = json.JSONDecoder()

    def _more(self, at_least: int) -> bool:
        """Read at least ``at_least`` more characters (fewer at the end); False at EOF."""
        if self.eof:
            return False
        self.text = self.text[self.pos:]
        self.pos = 0
        data = self.stream.read(max(self.chunk, at_least))
        if not data:
            self.eof = True
            return False
        self.text += data
        return True

    def _advance(self, end: int) -> None:
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end), not consumed."""
        while True:
            end = self.pos
            while end < len(self.text) and self.text[end] in _WHITESPACE:
                end += 1
            self._advance(end)
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self._more(self.chunk):
                return ""

    def take(self) -> None:
        self._advance(self.pos + 1)

    def value(self, where: str) -> object:
        """Decode the JSON value at the cursor (after any whitespace), reading more until it is complete."""
        self.peek()  # raw_decode does not skip leading whitespace
        while True:
            try:
                value, end = self.decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                pending = len(self.text) - self.pos
                if pending > self.max_row:
                    raise JsonStreamError(where, f"a row longer than {self.max_row} characters") from None
                if not self._more(pending):  # double what is held: linear, not quadratic, re-parsing
                    raise JsonStreamError(where, f"not JSON: {exc.msg}") from None
                continue
            if end == len(self.text) and self._more(self.chunk):
                continue  # a number or literal may go on in the next chunk
            if end - self.pos > self.max_row:
                raise JsonStreamError(where, f"a row longer than {self.max_row} characters")
            self._advance(end)
            return value


def json_rows(stream: TextIO, *, chunk_chars: int = CHUNK_CHARS, max_row_chars: int = MAX_ROW_CHARS
              ) -> Iterator[tuple[str, object]]:
    """(where, value) for each row: the items of a top-level array ("row n"), else each
    whitespace-separated value ("line n", the line it starts on: JSON Lines, or one object)."""
    buf = _Buffer(stream, chunk_chars, max_row_chars)
    if buf.peek() != "[":
        while buf.peek():
            where = f"line {buf.line}"
            yield where, buf.value(where)
        return
    buf.take()
    n = 0
    if buf.peek() == "]":
        buf.take()
    else:
        while True:
            n += 1
            yield f"row {n}", buf.value(f"row {n}")
            sep = buf.peek()
            buf.take()
            if sep == "]":
                break
            if sep != ",":
                raise JsonStreamError(f"row {n}", f"expected ',' or ']' after it, found {sep or 'the end'!r}")
    if buf.peek():
        raise JsonStreamError(f"row {n}", "more data after the closing ']'")
