"""rayserve.tuning.data: the same conversations read from every dataset format Kaito accepts (jsonl,
json, parquet, arrow, csv), from a directory and from a URL, and errors that name the file and row."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from rayserve.tuning import netguard
from rayserve.tuning.data import SUPPORTED_SUFFIXES, DatasetError, DownloadRefused, fetch, read_conversations


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


CONVS = [
    [_msg("user", "what is kaito"), _msg("assistant", "kaito is a fast operator")],
    [_msg("system", "be brief"), _msg("user", "hello"), _msg("assistant", "hello world")],
    # CSV quoting and unicode: commas, quotes, a newline
    [_msg("user", 'say "a, b"\nthen stop'), _msg("assistant", "a, b — naïve ✓")],
]


def _rows(convs: list[list[dict[str, str]]]) -> list[dict]:
    return [{"messages": c} for c in convs]


def write_jsonl(path: Path, convs) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(convs)))


def write_json_array(path: Path, convs) -> None:
    path.write_text(json.dumps(_rows(convs), indent=2))


def write_table(path: Path, table: pa.Table) -> None:
    """``table`` in the format ``path``'s suffix names (``.arrow``: the IPC file format)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pq.write_table(table, path)
    elif suffix == ".feather":
        feather.write_feather(table, path)
    elif suffix == ".csv":
        pcsv.write_csv(table, path)
    else:
        with ipc.new_file(path, table.schema) as w:
            w.write_table(table)


def write_rows(path: Path, convs) -> None:
    write_table(path, pa.Table.from_pylist(_rows(convs)))


def write_arrow_stream(path: Path, convs) -> None:
    """The IPC stream format, which Hugging Face ``datasets`` writes into its ``.arrow`` files."""
    table = pa.Table.from_pylist(_rows(convs))
    with ipc.new_stream(path, table.schema) as w:
        w.write_table(table)


def write_csv(path: Path, convs) -> None:
    write_table(path, pa.table({"id": list(range(len(convs))), "messages": [json.dumps(c) for c in convs]}))


WRITERS: dict[str, tuple[str, Callable]] = {
    "jsonl": ("d.jsonl", write_jsonl),
    "json-array": ("d.json", write_json_array),
    "json-lines-in-json": ("d.json", write_jsonl),
    "parquet": ("d.parquet", write_rows),
    "arrow-file": ("d.arrow", write_rows),
    "arrow-stream": ("d.arrow", write_arrow_stream),
    "feather": ("d.feather", write_rows),
    "csv": ("d.csv", write_csv),
}


@pytest.mark.parametrize("fmt", WRITERS)
def test_every_format_reads_the_same_conversations(fmt: str, tmp_path: Path):
    name, write = WRITERS[fmt]
    write(tmp_path / name, CONVS)
    assert read_conversations(fetch(str(tmp_path / name))) == CONVS


def test_suffix_is_case_insensitive_and_file_urls_work(tmp_path: Path):
    write_rows(tmp_path / "My Data.PARQUET", CONVS)
    assert read_conversations(fetch((tmp_path / "My Data.PARQUET").as_uri())) == CONVS


def test_directory_loads_every_supported_file_in_name_order(tmp_path, caplog):
    write_rows(tmp_path / "b.parquet", CONVS[1:])
    write_jsonl(tmp_path / "a.jsonl", CONVS[:1])
    (tmp_path / "README.md").write_text("not data")
    (tmp_path / ".hidden.jsonl").write_text("not read either")
    (tmp_path / "sub.jsonl").mkdir()  # a directory with a dataset's name is not a file
    assert read_conversations(fetch(str(tmp_path))) == CONVS
    assert "README.md" in caplog.text


def test_conversations_without_an_assistant_are_dropped(tmp_path: Path):
    write_jsonl(tmp_path / "d.jsonl", [[_msg("user", "hi")], *CONVS])
    assert read_conversations(tmp_path / "d.jsonl") == CONVS
    write_jsonl(tmp_path / "none.jsonl", [[_msg("user", "hi")]])
    with pytest.raises(DatasetError, match="no conversation with an assistant message"):
        read_conversations(tmp_path / "none.jsonl")


# --- errors ----------------------------------------------------------------------------------------


def test_unsupported_suffix_lists_the_supported_ones(tmp_path: Path):
    (tmp_path / "d.txt").write_text("{}")
    with pytest.raises(DatasetError, match=r"d\.txt.*'\.txt'") as e:
        read_conversations(tmp_path / "d.txt")
    assert all(s in str(e.value) for s in SUPPORTED_SUFFIXES)


def test_directory_without_dataset_files(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"no dataset file in the directory; supported: \.jsonl"):
        read_conversations(tmp_path)


def test_missing_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        fetch(str(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".csv"])
def test_table_without_a_messages_column(suffix: str, tmp_path: Path):
    path = tmp_path / f"d{suffix}"
    write_table(path, pa.table({"prompt": ["q"], "completion": ["a"]}))
    error = rf"d\{suffix}: no 'messages' column \(columns: prompt, completion\)"
    with pytest.raises(DatasetError, match=error):
        read_conversations(path)


def test_json_row_without_messages_names_file_and_row(tmp_path: Path):
    rows = [*_rows(CONVS[:1]), {"prompt": "q", "completion": "a"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    error = r"d\.jsonl, line 2: no 'messages' field \(has keys \['completion', 'prompt'\]\)"
    with pytest.raises(DatasetError, match=error):
        read_conversations(tmp_path / "d.jsonl")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    with pytest.raises(DatasetError, match=r"d\.json, row 2: no 'messages' field"):
        read_conversations(tmp_path / "d.json")


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"role": "user"}], r"row 2, message 1: expected \{'role': str, 'content': str\}, got \{'role': "),
        ([{"role": "user", "content": None}], r"row 2, message 1: expected"),
        (["hello"], r"row 2, message 1: expected .*got 'hello'"),
        ({"role": "user", "content": "hi"}, r"row 2: 'messages' must be a list"),
        (None, r"row 2: 'messages' must be a list .*got None"),
    ],
)
def test_malformed_messages_name_file_row_and_message(messages, error: str, tmp_path: Path):
    (tmp_path / "d.json").write_text(json.dumps([*_rows(CONVS[:1]), {"messages": messages}]))
    with pytest.raises(DatasetError, match=rf"d\.json, {error}"):
        read_conversations(tmp_path / "d.json")


def test_csv_cell_that_is_not_json(tmp_path: Path):
    pcsv.write_csv(pa.table({"messages": [json.dumps(CONVS[0]), "user: hi"]}), tmp_path / "d.csv")
    with pytest.raises(DatasetError, match=r"d\.csv, row 2: 'messages' is text but not JSON"):
        read_conversations(tmp_path / "d.csv")


def test_corrupt_parquet_names_the_file(tmp_path: Path):
    (tmp_path / "d.parquet").write_text('{"messages": []}\n')
    with pytest.raises(DatasetError, match=r"d\.parquet: not a readable parquet file"):
        read_conversations(tmp_path / "d.parquet")


def test_bad_jsonl_line_names_it(tmp_path: Path):
    (tmp_path / "d.jsonl").write_text(json.dumps(_rows(CONVS)[0]) + "\n\n{oops\n")
    with pytest.raises(DatasetError, match=r"d\.jsonl, line 3: not JSON"):
        read_conversations(tmp_path / "d.jsonl")


# --- URLs ------------------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files, and ``/to/<url-quoted target>`` answered with a 302 to the target."""

    def do_GET(self) -> None:
        if self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", urllib.parse.unquote(self.path[4:]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


def _loopback_ok(ip: netguard.IPAddress) -> str | None:
    """The test server is on 127.0.0.1: let it through, apply the real rules to any other address."""
    return None if str(ip) == "127.0.0.1" else netguard.address_problem(ip)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, the directory it serves), on loopback only."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json-array", "arrow-stream"])
def test_url_path_suffix_decides_the_format(fmt: str, served, tmp_path: Path):
    base, root = served
    name, write = WRITERS[fmt]
    write(root / name, CONVS)
    # the query string (Hugging Face's ?download=true) is not part of the suffix
    path = fetch(f"{base}/{name}?download=true", workdir=str(tmp_path), address_check=_loopback_ok)
    assert path.suffix == Path(name).suffix and path.parent == tmp_path
    assert read_conversations(path) == CONVS


def test_unsupported_url_suffix_fails_before_downloading(served):
    base, _ = served
    # the file does not exist: a download attempt would fail with HTTP 404 rather than this error
    with pytest.raises(DatasetError, match=r"missing\.txt\?x=1: unsupported dataset file type '\.txt'"):
        fetch(f"{base}/missing.txt?x=1", address_check=_loopback_ok)


def _jsonl(root: Path) -> None:
    (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(CONVS)))


def test_a_download_from_a_private_address_is_refused(served):
    """The trainer's own check: loopback (where this server is) is refused, and so is a public-looking
    name that resolves to it, before anything is fetched."""
    base, root = served
    _jsonl(root)
    with pytest.raises(DownloadRefused, match=r"127\.0\.0\.1"):
        fetch(f"{base}/d.jsonl")
    port = urllib.parse.urlsplit(base).port
    with pytest.raises(DownloadRefused, match=r"data\.example\.com, which resolves to .*127\.0\.0\.1"):
        fetch(f"http://data.example.com:{port}/d.jsonl", resolve=lambda host: ["93.184.216.34", "127.0.0.1"])


def test_every_redirect_is_checked(served, tmp_path: Path):
    base, root = served
    _jsonl(root)
    target = urllib.parse.quote(f"{base}/d.jsonl", safe="")
    assert read_conversations(fetch(f"{base}/to/{target}#.jsonl", workdir=str(tmp_path),
                                    address_check=_loopback_ok)) == CONVS
    metadata = urllib.parse.quote("http://169.254.169.254/latest/meta-data.jsonl", safe="")
    with pytest.raises(DownloadRefused, match=r"169\.254\.169\.254"):
        fetch(f"{base}/to/{metadata}#.jsonl", address_check=_loopback_ok)
    loop = urllib.parse.quote(f"{base}/to/" + urllib.parse.quote(f"{base}/d.jsonl", safe=""), safe="")
    assert fetch(f"{base}/to/{loop}#.jsonl", address_check=_loopback_ok, workdir=str(tmp_path))


def test_a_download_is_capped_in_bytes(served):
    base, root = served
    _jsonl(root)
    with pytest.raises(DownloadRefused, match="over the limit of 10"):
        fetch(f"{base}/d.jsonl", address_check=_loopback_ok, max_bytes=10)


def test_reading_jsonl_does_not_import_pyarrow():
    """pyarrow is loaded only for the formats that need it (the serve path imports none of this)."""
    code = (
        "import sys, tempfile, pathlib, json\n"
        "from rayserve.tuning.data import read_conversations\n"
        "p = pathlib.Path(tempfile.mkdtemp()) / 'd.jsonl'\n"
        f"p.write_text(json.dumps({{'messages': {CONVS[0]!r}}}))\n"
        "read_conversations(p)\n"
        "assert 'pyarrow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
