"""Generate tiny Phi-3-architecture checkpoints for tests, demos and benchmarks.

Why: there is no model hub at test time (and a real Phi-3 is 7 GB), but the serving code
must exercise the real ``from_pretrained`` paths: config.json, safetensors weights,
tokenizer.json, a chat template and generation_config.json. So we build a checkpoint with
the exact Phi-3 architecture (``Phi3ForCausalLM``) at toy size, with random weights from a
fixed seed, and a byte-level BPE tokenizer trained locally on generated text.

The output is idempotent: a directory that already holds a complete checkpoint made with
the same parameters is reused, and a half-written one is never visible (we write to a
temporary sibling and rename).

CLI: ``python -m hack.tiny_model [--out DIR] [--hidden 64] [--layers 4] [--heads 4]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_DIR = (
    Path(os.environ.get("KAITO_CACHE", Path.home() / ".cache" / "kaito-py")) / "models" / "tiny-phi-3"
)

# Phi-3's chat format: <|role|>\ncontent<|end|>\n ... then <|assistant|>\n for generation.
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
_MARKER = ".tiny-model.json"

_WORD_TEXT = (
    "the a model node cluster ray serve gpu token batch cache layer worker replica request "
    "answer question kaito workspace preset phi small tiny fast slow hello world kubernetes "
    "operator stage pipeline adapter lora tune data hidden state key value head scale up down "
    "queue latency one two three four five six seven eight nine ten is are was be to of in on "
    "for with and or not yes no "
)
_WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True)
class TinyModelParams:
    """Knobs of the generated checkpoint; their hash decides whether a cached copy is reused."""

    hidden: int = 64
    layers: int = 4
    heads: int = 4
    intermediate: int = 128
    vocab: int = 512
    max_positions: int = 512
    seed: int = 0
    # Larger than HF's 0.02 so random logits are peaked: greedy decoding then has no near
    # ties, which keeps token-for-token comparisons (sharded vs not) meaningful.
    init_range: float = 0.25

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _corpus(seed: int, lines: int = 3000) -> list[str]:
    """Deterministic pseudo-English lines (plus chat-formatted ones) to train the BPE on."""
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
        line = " ".join(words).capitalize() + rng.choice([".", "?", "!", ""])
        if i % 5 == 0:
            line = f"<|user|>\n{line}<|end|>\n<|assistant|>\n{' '.join(reversed(words))}<|end|>"
        if i % 7 == 0:
            line += f' {rng.randint(0, 9999)} {{"k": [1, 2]}}'
        out.append(line)
    return out


def _train_tokenizer(params: TinyModelParams):
    """Train a byte-level BPE (so any input encodes, no UNK) and wrap it as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=params.vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(params.seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    fast.chat_template = PHI3_CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def _build_model(params: TinyModelParams, tokenizer):
    """A randomly initialised Phi3ForCausalLM whose special token ids match the tokenizer."""
    import torch
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    config = Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=params.hidden,
        intermediate_size=params.intermediate,
        num_hidden_layers=params.layers,
        num_attention_heads=params.heads,
        num_key_value_heads=params.heads,
        max_position_embeddings=params.max_positions,
        original_max_position_embeddings=params.max_positions,
        initializer_range=params.init_range,
        bos_token_id=eos,
        eos_token_id=[eos, end],
        pad_token_id=eos,
        sliding_window=None,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(params.seed)
    model = Phi3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=eos, eos_token_id=[eos, end], pad_token_id=eos, do_sample=False, max_new_tokens=32
    )
    return model


def is_complete(path: Path, params: TinyModelParams | None = None) -> bool:
    """True when ``path`` holds a finished checkpoint made with ``params``."""
    marker = Path(path) / _MARKER
    if not marker.is_file():
        return False
    return json.loads(marker.read_text()).get("digest") == (params or TinyModelParams()).digest()


def ensure_tiny_model(out: str | os.PathLike | None = None, params: TinyModelParams | None = None) -> Path:
    """Create (or reuse) a tiny Phi-3 checkpoint at ``out`` and return its path.

    Safe to call concurrently from several processes: each writes a private temp dir and
    the first complete rename wins.
    """
    params = params or TinyModelParams()
    path = Path(out) if out else DEFAULT_DIR
    if is_complete(path, params):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        tokenizer = _train_tokenizer(params)
        model = _build_model(params, tokenizer)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"digest": params.digest(), "params": asdict(params)}))
        if is_complete(path, params):  # someone else finished first
            return path
        if path.exists():
            shutil.rmtree(path)  # stale or different params
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DEFAULT_DIR), help="target directory (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=TinyModelParams.hidden)
    p.add_argument("--layers", type=int, default=TinyModelParams.layers)
    p.add_argument("--heads", type=int, default=TinyModelParams.heads)
    p.add_argument("--intermediate", type=int, default=TinyModelParams.intermediate)
    p.add_argument("--vocab", type=int, default=TinyModelParams.vocab)
    p.add_argument("--max-positions", type=int, default=TinyModelParams.max_positions)
    p.add_argument("--seed", type=int, default=TinyModelParams.seed)
    a = p.parse_args(argv)
    params = TinyModelParams(
        hidden=a.hidden,
        layers=a.layers,
        heads=a.heads,
        intermediate=a.intermediate,
        vocab=a.vocab,
        max_positions=a.max_positions,
        seed=a.seed,
    )
    print(ensure_tiny_model(a.out, params))


if __name__ == "__main__":
    main()
