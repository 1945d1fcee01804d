"""Train a LoRA adapter (QLoRA when bitsandbytes and a GPU are present) and save it for serving.

Why a plain torch loop and not ``transformers.Trainer``: the job is small and must run the
same on a 2-core CI box and a GPU node; a loop we own has no hidden accelerate/distributed
defaults, logs one JSON line per step (the controller's Job logs stay readable), and writes
``<output>/adapter_model.safetensors`` + ``adapter_config.json`` (peft's format, which
``rayserve.adapters.attach_adapters`` loads) and ``training_result.json``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from rayserve.loading import load_tokenizer, pick_device
from rayserve.spec import ModelSpec
from rayserve.tuning.cli import config_from_args
from rayserve.tuning.config import TuningConfig
from rayserve.tuning.data import batches, fetch, read_conversations, tokenize
from rayserve.tuning.schedule import step_groups, total_steps

__all__ = ["TuningConfig", "fit", "main", "train"]

log = logging.getLogger(__name__)


def qlora_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def _load_base(cfg: TuningConfig, device: torch.device):
    from transformers import AutoModelForCausalLM

    if cfg.method == "qlora":
        if qlora_available():
            from peft import prepare_model_for_kbit_training
            from transformers import BitsAndBytesConfig

            quant = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=cfg.quant_type,
                bnb_4bit_compute_dtype=getattr(torch, cfg.compute_dtype),
                bnb_4bit_use_double_quant=cfg.double_quant,
            )
            model = AutoModelForCausalLM.from_pretrained(
                cfg.model, revision=cfg.revision, quantization_config=quant, device_map={"": 0}
            )
            return prepare_model_for_kbit_training(model)
        log.warning("qlora needs bitsandbytes and a GPU; falling back to lora")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return AutoModelForCausalLM.from_pretrained(cfg.model, revision=cfg.revision, dtype=dtype).to(device)


def _mean_loss(model, data, pad_id: int, device: torch.device) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for ids, mask, labels in batches(data, 8, pad_id, torch.Generator().manual_seed(0)):
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
            total += float(out.loss) * len(ids)
            n += len(ids)
    model.train()
    return total / max(n, 1)


def fit(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    passes: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]],
    grad_accum: int,
    total: int,
    device: torch.device,
) -> list[float]:
    """Take exactly ``total`` optimizer steps over ``passes()`` (see ``schedule.step_groups``);
    returns each step's mean micro-batch loss.

    Each group's losses are averaged over the group's own size, so a pass's short last group is
    a full-weight step, and gradients are zeroed before the first and after every step, so none
    carries from one step (or pass) into the next.
    """
    opt.zero_grad(set_to_none=True)
    losses: list[float] = []
    for group in step_groups(passes, grad_accum, total):
        loss_sum = 0.0
        for ids, mask, labels in group:
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
            (out.loss / len(group)).backward()
            loss_sum += float(out.loss.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss_sum / len(group))
        print(json.dumps({"step": len(losses), "of": total, "loss": round(losses[-1], 4)}), flush=True)
    return losses


def train(cfg: TuningConfig) -> dict:
    """Run the job; returns (and writes) the result summary."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    device = pick_device()
    tok = load_tokenizer(ModelSpec(name="base", path=cfg.model, revision=cfg.revision))
    convs = [conv for source in cfg.data for conv in read_conversations(fetch(source))]
    data = [tokenize(tok, c, cfg.max_length) for c in convs]
    model = _load_base(cfg, device)
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.train()
    total = total_steps(len(data), cfg.batch_size, cfg.grad_accum, cfg.epochs, cfg.max_steps)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    before = _mean_loss(model, data, tok.pad_token_id, device)
    t0 = time.monotonic()

    def passes():
        return batches(data, cfg.batch_size, tok.pad_token_id, gen)

    losses = fit(model, opt, passes, cfg.grad_accum, total, device)
    step = len(losses)
    after = _mean_loss(model, data, tok.pad_token_id, device)
    out_dir = Path(cfg.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    result = {
        "method": cfg.method if cfg.method == "lora" or qlora_available() else "lora",
        "steps": step,
        "examples": len(data),
        "loss_before": before,
        "loss_after": after,
        "seconds": round(time.monotonic() - t0, 2),
        "base_model": cfg.model,
    }
    (out_dir / "training_result.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> dict:
    """``python -m rayserve.tuning``: flags and ``--config`` (``rayserve.tuning.cli.config_from_args``)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    cfg = config_from_args(argv, description=__doc__.splitlines()[0])
    result = train(cfg)
    print(json.dumps({"result": result}), flush=True)
    return result
