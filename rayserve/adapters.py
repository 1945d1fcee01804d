"""LoRA adapters on one base model, chosen per batch row.

Why per row: with continuous batching, requests for different adapters (and for the plain
base model) share one decode step. peft's LoRA layers support this natively - pass
``adapter_names=[...]`` (one per row, ``"__base__"`` for none) and each sub-batch gets its
own low-rank delta - but only through a forward kwarg. Since pipeline stages call decoder
layers directly, we inject that kwarg with forward pre-hooks on the LoRA layers for the
duration of one stage forward.

``strength`` scales an adapter's delta (peft's ``set_scale``): 1.0 is as trained, 0 turns
it off, 0.5 halves it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from rayserve.spec import BASE, AdapterSpec

__all__ = ["BASE", "adapter_rows", "attach_adapters"]


def attach_adapters(model: nn.Module, adapters: Sequence[AdapterSpec]) -> nn.Module:
    """Load every adapter into ``model`` (unmerged) and apply its strength.

    Returns the underlying transformers model (with LoRA layers injected), not the
    ``PeftModel`` wrapper, so the rest of the stack sees the usual ``model.model.layers``.
    """
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    first, *rest = adapters
    peft_model = PeftModel.from_pretrained(model, first.path, adapter_name=first.name, is_trainable=False)
    for a in rest:
        peft_model.load_adapter(a.path, adapter_name=a.name, is_trainable=False)
    strengths = {a.name: a.strength for a in adapters}
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            for name, strength in strengths.items():
                module.set_scale(name, strength)
    inner = peft_model.base_model.model
    inner.loaded_adapters = list(strengths)  # what this model can serve, besides the base
    return inner


def _lora_layers(modules: Sequence[nn.Module]) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [m for root in modules for m in root.modules() if isinstance(m, LoraLayer)]


@contextmanager
def adapter_rows(modules: Sequence[nn.Module], adapter_names: Sequence[str] | None) -> Iterator[None]:
    """While active, every LoRA layer under ``modules`` uses ``adapter_names[row]`` per row."""
    if adapter_names is None:
        yield
        return
    layers = _lora_layers(modules)
    names = list(adapter_names)

    def hook(_module, args, kwargs):
        return args, {**kwargs, "adapter_names": names}

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
