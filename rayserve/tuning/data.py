"""Training data: chat conversations from a file, a directory or a URL, tokenized with loss on the
assistant's words only.

Why several formats: Kaito's tuning accepts csv, json, jsonl, parquet and arrow files, and the
datasets it recommends (e.g. dolly-15k-oai-style) are published as parquet. Every format holds one
conversation per row in a ``messages`` column: a list of ``{"role", "content"}`` (in CSV, where a
cell is text, that list as a JSON string). The file's suffix picks the reader, the URL path's suffix
for a download; a directory (Kaito mounts a volume or copies an image's /data) loads every supported
file in it, in name order. pyarrow reads parquet, Arrow and CSV; it is imported only when such a
file is read, so the serving path never loads it.

Why assistant-only labels: the adapter should learn to *answer*, not to reproduce the
user's prompt or the chat template's markup. We render each conversation with the model's
chat template, then label exactly the tokens that overlap an assistant message's content,
plus the one token after it (the template's end-of-turn marker) so the model learns to stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import torch

from rayserve.tuning import jsonstream, netguard

if TYPE_CHECKING:
    import pyarrow as pa

IGNORE = -100

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]
# (where in the file, for errors: "line 3" / "row 3"; the row's ``messages`` value)
Rows = Iterator[tuple[str, object]]


class DatasetError(ValueError):
    """A dataset that cannot be read as chat conversations; the message names the file and row."""


MAX_DOWNLOAD_BYTES = 4 * 2**30  # far above any chat dataset Kaito's samples use (dolly-15k: 12 MB)
DOWNLOAD_DEADLINE_S = 30 * 60.0  # the whole download, redirects included; not per read
MAX_REDIRECTS = 5


class DownloadRefused(DatasetError):
    """A dataset URL the trainer will not fetch: its host, a redirect's, or its size or time."""


def fetch(
    source: str,
    workdir: str | None = None,
    *,
    resolve: netguard.Resolver | None = None,
    address_check: netguard.AddressCheck | None = None,
    verify: ssl.SSLContext | bool = True,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    deadline_s: float = DOWNLOAD_DEADLINE_S,
) -> Path:
    """A local path for ``source``: itself when it is a path (a file or a directory), else a download
    (http/https) named by the URL path's suffix, which is checked before anything is downloaded.

    A download resolves the host of the URL and of every redirect once (``resolve``; None: the
    system resolver at call time), checks every address with ``address_check`` (None:
    ``netguard.address_problem``) and connects to one of those very addresses (``_pinned_get``),
    follows at most ``MAX_REDIRECTS``, and stops past ``max_bytes`` or ``deadline_s`` in all.
    ``verify``: the TLS trust (True: the system's CAs), checked against the URL's host name."""
    url = urllib.parse.urlparse(source)
    if url.scheme in ("", "file"):
        path = Path(urllib.request.url2pathname(url.path) if url.scheme == "file" else source)
        if not path.exists():
            raise FileNotFoundError(f"dataset {source} not found")
        return path
    if url.scheme not in ("http", "https"):
        raise ValueError(f"unsupported dataset URL scheme {url.scheme!r}")
    import httpx

    suffix = dataset_suffix(urllib.parse.unquote(url.path), source)
    target = Path(workdir or tempfile.mkdtemp(prefix="kaito-data-")) / f"dataset{suffix}"
    deadline = time.monotonic() + deadline_s
    current = source
    for _ in range(MAX_REDIRECTS + 1):
        addresses = _vetted(source, current, resolve or netguard.resolve,
                            address_check or netguard.address_problem)
        # a client per hop: a pooled TLS connection made for one name is never reused for another
        with httpx.Client(follow_redirects=False, timeout=60, verify=verify) as http, \
                _pinned_get(http, current, addresses) as r:
            if r.is_redirect:
                current = urllib.parse.urljoin(current, r.headers.get("location", ""))
                continue
            r.raise_for_status()
            _save(r, target, source, max_bytes, deadline)
            log.info("downloaded dataset %s to %s", source, target)
            return target
    raise DownloadRefused(f"dataset {source}: more than {MAX_REDIRECTS} redirects")


def _vetted(source: str, url: str, resolve: netguard.Resolver, check: netguard.AddressCheck
            ) -> list[netguard.IPAddress]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadRefused(f"dataset {source}: {url[:200]!r} is not an http(s) URL")
    try:
        return netguard.vetted_addresses(parts.hostname, resolve, check)
    except netguard.HostRefused as exc:
        raise DownloadRefused(f"dataset {source}: {netguard.refusal(url, str(exc))}") from None


@contextlib.contextmanager
def _pinned_get(http, url: str, addresses: list[netguard.IPAddress]) -> Iterator:
    """GET ``url`` over a connection to one of ``addresses`` (in order, the next on a refused
    connection), never to what the name resolves to now: the URL's host is replaced by the
    address, the name goes in the Host header and, for https, in the TLS SNI, against which the
    server's certificate is verified (httpcore's ``sni_hostname``)."""
    import httpx

    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # name[:port], what Host says (credentials never sent)
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    for i, ip in enumerate(addresses):
        literal = f"[{ip}]" if ip.version == 6 else str(ip)
        netloc = f"{literal}:{parts.port}" if parts.port else literal
        pinned = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        request = http.build_request("GET", pinned, headers={"Host": host}, extensions=extensions)
        try:
            response = http.send(request, stream=True)
        except httpx.ConnectError:
            if i == len(addresses) - 1:
                raise
            continue
        try:
            yield response
        finally:
            response.close()
        return


def _save(response, target: Path, source: str, max_bytes: int, deadline: float) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise DownloadRefused(f"dataset {source}: {declared} bytes is over the limit of {max_bytes}")
    written = 0
    with target.open("wb") as f:
        for chunk in response.iter_bytes():
            written += len(chunk)
            if written > max_bytes:
                raise DownloadRefused(f"dataset {source}: over the limit of {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise DownloadRefused(f"dataset {source}: not downloaded within its deadline")
            f.write(chunk)


def dataset_suffix(name: str, source: str | None = None) -> str:
    """The reader's key for a file name (or URL path); an unsupported one is an error listing those
    that are, because a silently skipped or misparsed dataset would train on nothing useful."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in READERS:
        kind = repr(suffix) if suffix else "(no suffix)"
        raise DatasetError(f"{source or name}: unsupported dataset file type {kind}; supported: {_SUPPORTED}")
    return suffix


def dataset_files(path: Path) -> list[Path]:
    """``path`` itself, or a directory's supported files by name; other files there are skipped with a
    warning, since mounted volumes and images often carry a README or lost+found beside the data."""
    if not path.is_dir():
        dataset_suffix(path.name, str(path))
        return [path]
    files, skipped = [], []
    for p in sorted(path.iterdir(), key=lambda p: p.name):
        if p.name.startswith(".") or not p.is_file():
            continue
        (files if p.suffix.lower() in READERS else skipped).append(p)
    if skipped:
        log.warning("%s: skipping files that are not datasets: %s", path, ", ".join(p.name for p in skipped))
    if not files:
        raise DatasetError(f"{path}: no dataset file in the directory; supported: {_SUPPORTED}")
    return files


def read_conversations(path: Path) -> list[Conversation]:
    """Every conversation with an assistant message, from a file or a directory (see module doc);
    conversations without one teach nothing under assistant-only labels and are dropped."""
    convs = [conv for f in dataset_files(path) for conv in read_file(f)]
    out = [conv for conv in convs if any(m["role"] == "assistant" for m in conv)]
    if not out:
        raise DatasetError(f"{path}: no conversation with an assistant message")
    return out


def read_file(path: Path) -> list[Conversation]:
    """One dataset file's conversations, checked row by row."""
    reader = READERS[dataset_suffix(path.name, str(path))]
    return [_conversation(path, where, messages) for where, messages in reader(path)]


def _conversation(path: Path, where: str, messages: object) -> Conversation:
    if isinstance(messages, str):  # a CSV cell is text; other exports may hold JSON text too
        try:
            messages = json.loads(messages)
        except ValueError as e:
            raise DatasetError(f"{path}, {where}: 'messages' is text but not JSON: {e}") from None
    if not isinstance(messages, list):
        raise DatasetError(
            f"{path}, {where}: 'messages' must be a list of {{'role', 'content'}}, got {_brief(messages)}"
        )
    return [_message(path, f"{where}, message {i}", m) for i, m in enumerate(messages, start=1)]


def _message(path: Path, where: str, m: object) -> dict[str, str]:
    if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
        raise DatasetError(f"{path}, {where}: expected {{'role': str, 'content': str}}, got {_brief(m)}")
    return {"role": m["role"], "content": m["content"]}


def _brief(value: object, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# --- readers: each yields (where, messages) per row -----------------------------------------------


def _messages_field(path: Path, where: str, row: object) -> object:
    if not isinstance(row, dict) or "messages" not in row:
        has = f"keys {sorted(row)}" if isinstance(row, dict) else _brief(row)
        raise DatasetError(f"{path}, {where}: no 'messages' field (has {has})")
    return row["messages"]


def _read_jsonl(path: Path) -> Rows:
    """One row per line, read line by line (a line longer than a row may be is an error, not an
    unbounded read)."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(iter(lambda: f.readline(jsonstream.MAX_ROW_CHARS + 1), ""), start=1):
            if len(line) > jsonstream.MAX_ROW_CHARS:
                raise DatasetError(f"{path}, line {n}: longer than {jsonstream.MAX_ROW_CHARS} characters")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise DatasetError(f"{path}, line {n}: not JSON: {e}") from None
            yield f"line {n}", _messages_field(path, f"line {n}", row)


def _read_json(path: Path) -> Rows:
    """A JSON array of rows (or a single row); JSON Lines content too, which pandas and datasets
    write into ``.json`` files as often as into ``.jsonl`` ones. Streamed (``jsonstream``): the
    file is never held whole, nor parsed into one document."""
    with path.open(encoding="utf-8") as f:
        try:
            for where, row in jsonstream.json_rows(f):
                yield where, _messages_field(path, where, row)
        except jsonstream.JsonStreamError as e:
            raise DatasetError(f"{path}, {e}") from None


def _table_rows(path: Path, load: Callable[[], pa.Table]) -> Rows:
    import pyarrow as pa

    try:
        table = load()
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: not a readable {path.suffix.lstrip('.').lower()} file: {e}") from None
    if "messages" not in table.column_names:
        columns = ", ".join(table.column_names) or "none"
        raise DatasetError(f"{path}: no 'messages' column (columns: {columns})")
    for n, messages in enumerate(table.column("messages").to_pylist(), start=1):
        yield f"row {n}", messages


def _read_parquet(path: Path) -> Rows:
    import pyarrow.parquet as pq

    return _table_rows(path, lambda: pq.read_table(path))


def _read_arrow(path: Path) -> Rows:
    """Arrow IPC, file format (what ``.feather`` v2 is) or stream format (what ``datasets`` caches)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    def load() -> pa.Table:
        try:
            return ipc.open_file(path).read_all()
        except pa.ArrowInvalid:
            return ipc.open_stream(path).read_all()

    return _table_rows(path, load)


def _read_csv(path: Path) -> Rows:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    # the cells are JSON text: keep them strings whatever pyarrow's type inference would guess
    options = pcsv.ConvertOptions(column_types={"messages": pa.string()})
    return _table_rows(path, lambda: pcsv.read_csv(path, convert_options=options))


READERS: dict[str, Callable[[Path], Rows]] = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".parquet": _read_parquet,
    ".arrow": _read_arrow,
    ".feather": _read_arrow,
    ".csv": _read_csv,
}
SUPPORTED_SUFFIXES = tuple(READERS)
_SUPPORTED = ", ".join(SUPPORTED_SUFFIXES)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def tokenize(tokenizer, conv: list[dict[str, str]], max_length: int) -> Example:
    """Render ``conv`` with the chat template and label the assistant spans (see module doc)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=False)
    else:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in conv)
    spans, cursor = [], 0
    for m in conv:
        start = text.find(m["content"], cursor) if m["content"] else -1
        if start < 0:
            continue
        cursor = start + len(m["content"])
        if m["role"] == "assistant":
            spans.append((start, cursor))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE] * len(ids)
    for s, e in spans:
        inside = [i for i, (a, b) in enumerate(offsets) if a < e and b > s]
        if not inside:
            continue
        after = inside[-1] + 1  # the end-of-turn marker right after the answer
        for i in [*inside, after] if after < len(ids) else inside:
            labels[i] = ids[i]
    return Example(ids[:max_length], labels[:max_length])


def batches(examples: list[Example], size: int, pad_id: int, generator: torch.Generator):
    """Shuffled right-padded batches: (input_ids, attention_mask, labels)."""
    order = torch.randperm(len(examples), generator=generator).tolist()
    for i in range(0, len(order), size):
        group = [examples[j] for j in order[i : i + size]]
        width = max(len(e.input_ids) for e in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        labels = torch.full((len(group), width), IGNORE, dtype=torch.long)
        for row, e in enumerate(group):
            n = len(e.input_ids)
            ids[row, :n] = torch.tensor(e.input_ids)
            mask[row, :n] = 1
            labels[row, :n] = torch.tensor(e.labels)
        yield ids, mask, labels
