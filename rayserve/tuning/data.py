"""Training data: OpenAI chat-format JSONL from a path or URL, tokenized with loss on the
assistant's words only.

Why assistant-only labels: the adapter should learn to *answer*, not to reproduce the
user's prompt or the chat template's markup. We render each conversation with the model's
chat template, then label exactly the tokens that overlap an assistant message's content,
plus the one token after it (the template's end-of-turn marker) so the model learns to stop.
"""

from __future__ import annotations

import json
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import torch

IGNORE = -100


def fetch(source: str, workdir: str | None = None) -> Path:
    """A local path for ``source``: itself when it is a path, else a download (http/https/file)."""
    scheme = urllib.parse.urlparse(source).scheme
    if scheme in ("", "file"):
        path = Path(urllib.parse.urlparse(source).path if scheme == "file" else source)
        if not path.is_file():
            raise FileNotFoundError(f"dataset {source} not found")
        return path
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported dataset URL scheme {scheme!r}")
    import httpx

    target = Path(workdir or tempfile.mkdtemp(prefix="kaito-data-")) / "dataset.jsonl"
    with httpx.stream("GET", source, follow_redirects=True, timeout=60) as r:
        r.raise_for_status()
        with target.open("wb") as f:
            for chunk in r.iter_bytes():
                f.write(chunk)
    return target


def read_conversations(path: Path) -> list[list[dict[str, str]]]:
    """Each line ``{"messages": [{"role", "content"}, ...]}``; a bad line is an error naming it."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            msgs = json.loads(line)["messages"]
            conv = [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: expected {{'messages': [{{'role', 'content'}}]}}: {e}") from None
        if any(m["role"] == "assistant" for m in conv):
            out.append(conv)
    if not out:
        raise ValueError(f"{path}: no conversation with an assistant message")
    return out


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
