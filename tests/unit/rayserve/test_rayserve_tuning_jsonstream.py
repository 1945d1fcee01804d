"""rayserve.tuning.jsonstream: a JSON dataset's rows come out one at a time, the buffer never
holds more than a row and a chunk, and malformed input names the row (issue 11, item 5)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from rayserve.tuning.data import DatasetError, read_conversations
from rayserve.tuning.jsonstream import JsonStreamError, json_rows

ROWS = [{"messages": [{"role": "user", "content": f"q{i} " + "x" * i},
                      {"role": "assistant", "content": f"a{i}, [\"}} {i}"}], "n": i * 1.5} for i in range(40)]


class CountingReader(io.StringIO):
    """A text stream that records how far it was read and the largest single read."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.read_so_far = self.largest = 0

    def read(self, size: int | None = -1) -> str:
        data = super().read(size)
        self.read_so_far += len(data)
        self.largest = max(self.largest, len(data))
        return data


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 16])
@pytest.mark.parametrize("layout", ["array", "array-indented", "lines", "single"])
def test_rows_are_the_documents_rows_at_any_chunk_size(chunk: int, layout: str) -> None:
    numbered = [(f"row {i + 1}", r) for i, r in enumerate(ROWS)]
    if layout == "array":
        text, want = json.dumps(ROWS), numbered
    elif layout == "array-indented":
        text, want = "\n " + json.dumps(ROWS, indent=2) + "\n", numbered
    elif layout == "lines":
        text = "".join(json.dumps(r) + "\n\n" for r in ROWS)
        want = [(f"line {2 * i + 1}", r) for i, r in enumerate(ROWS)]
    else:
        text, want = json.dumps(ROWS[3], indent=2), [("line 1", ROWS[3])]
    assert list(json_rows(io.StringIO(text), chunk_chars=chunk)) == want


def test_the_first_row_comes_before_the_file_is_read_and_the_buffer_stays_bounded() -> None:
    rows = [{"messages": [{"role": "assistant", "content": "y" * 100}]}] * 20_000  # ~2.4 MB
    stream = CountingReader(json.dumps(rows))
    it = json_rows(stream, chunk_chars=4096)
    next(it)
    assert stream.read_so_far <= 8192  # one chunk (or two), not 2.4 MB
    assert sum(1 for _ in it) == len(rows) - 1
    assert stream.largest <= 4096  # rows smaller than a chunk: never a bigger read


@pytest.mark.parametrize(("text", "error"), [
    ('[{"a": 1} {"b": 2}]', "row 1: expected ',' or ']'"),
    ('[{"a": 1}, {"b": ', "row 2: not JSON"),
    ('[{"a": 1}] {"b": 2}', "row 1: more data after the closing ']'"),
    ('{"a": 1}\n{"b": oops}\n', "line 2: not JSON"),
    ('[{"a": 1},]', "row 2: not JSON"),
])
def test_malformed_json_names_the_row(text: str, error: str) -> None:
    with pytest.raises(JsonStreamError, match=error):
        list(json_rows(io.StringIO(text), chunk_chars=3))


def test_a_row_over_the_limit_is_an_error_not_an_unbounded_buffer() -> None:
    text = json.dumps([{"messages": "m"}, {"messages": "z" * 5000}])
    stream = CountingReader(text)
    with pytest.raises(JsonStreamError, match=r"row 2: a row longer than 1000 characters"):
        list(json_rows(stream, chunk_chars=64, max_row_chars=1000))
    assert stream.read_so_far < 3000  # stopped soon after the limit, not at the end of the row


def test_the_dataset_reader_streams_json_and_names_file_and_row(tmp_path: Path) -> None:
    convs = [r["messages"] for r in ROWS]
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    assert read_conversations(tmp_path / "d.json") == convs
    (tmp_path / "bad.json").write_text(json.dumps(ROWS[:2])[:-1] + ", nope]")
    with pytest.raises(DatasetError, match=r"bad\.json, row 3: not JSON"):
        read_conversations(tmp_path / "bad.json")
