"""The preset catalog and the GPU SKU table, loaded from the YAML files beside this module.

A preset is data (catalog.yaml); adding a model means adding an entry, not code. Lookups of SKUs are
case-insensitive (Azure names are); a preset is found by its catalog name (exact) or by its Hugging
Face id (as Hugging Face writes it, ``microsoft/Phi-3-mini-4k-instruct``, or in any case, as the hub
resolves ids), which is how Kaito v0.9+ manifests name models; both suggest close matches for a typo.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

HERE = Path(__file__).resolve().parent
CATALOG_FILE = HERE / "catalog.yaml"
SKU_FILE = HERE / "gpu_skus.yaml"

Dtype = Literal["float16", "bfloat16", "float32"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Layout(_Data):
    tensor_parallel: bool = True
    distributed: bool = True


class TuningRequirements(_Data):
    lora_gpu_memory_gib: float = Field(gt=0)
    qlora_gpu_memory_gib: float = Field(gt=0)

    def gpu_memory_gib(self, method: str) -> float:
        return self.qlora_gpu_memory_gib if method.lower() == "qlora" else self.lora_gpu_memory_gib


class Experts(_Data):
    """A mixture-of-experts model's experts: every one sits in GPU memory, ``active`` run per token."""

    total: int = Field(gt=0)
    active: int = Field(gt=0)


Quantization = Literal["fp8", "mxfp4", "nvfp4", "int4", "awq", "gptq"]


class Architecture(_Data):
    """A model class (config.json's ``architectures[0]``) and whether our engine serves it.

    Why a table: the engine is ours (its own KV cache, stage split and batching), so a model runs
    only when its architecture has been proven through it; the webhook refuses the rest with ``why``.
    """

    name: str
    supported: bool
    proof: str | None = None
    why: str | None = None
    tensor_parallel: bool = Field(
        True, description="rayserve.tensor_parallel can split its layers by heads (q/k/v or packed qkv "
                          "attention, a gated MLP, the text model at model.model); else pipeline stages only"
    )


class QuantizationFormat(_Data):
    """A way of storing weights below the compute dtype, and what it needs (see catalog.yaml)."""

    name: Quantization
    supported: bool
    min_cuda_compute: str = Field(description="the oldest GPU that runs the format natively")
    older_gpus: Literal["refuse", "dequantize"] = Field(
        "refuse", description="below min_cuda_compute: refused, or dequantized to bf16 when loaded"
    )
    native_in_image: bool = Field(
        True, description="the serving image carries what runs the format natively (false: transformers "
                          "dequantizes it on every GPU, as on older ones)"
    )
    dequantized_min_cuda_compute: str | None = Field(
        None, description="dequantized weights need bfloat16 (compute capability 8.0): refuse older GPUs"
    )
    proof: str | None = None
    why: str | None = None


class Preset(_Data):
    name: str
    hf_model_id: str | None = None
    revision: str | None = Field(None, pattern=r"^[0-9a-f]{40}$",
                                 description="the hub commit the weights are pinned to; None: main")
    model_path: str | None = None
    params_b: float = Field(gt=0)
    weights_gib: float = Field(gt=0)
    gpu_memory_gib: float = Field(gt=0)
    disk_gib: int = Field(gt=0)
    max_context: int = Field(gt=0)
    dtype: Dtype
    architecture: str
    num_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int | None = Field(None, gt=0, description="None: the KV cache size is unknown, no context cap")
    quantization: Quantization | None = None
    kv_lora_rank: int | None = Field(None, gt=0, description="MLA: the latent the KV cache holds per token")
    qk_rope_head_dim: int | None = Field(None, gt=0, description="MLA: the rotary part cached beside it")
    sliding_window: int | None = Field(None, gt=0)
    sliding_window_layers: int | None = Field(None, ge=0, description="how many layers use the window")
    experts: Experts | None = None
    layout: Layout = Layout()
    tuning: TuningRequirements | None = None
    hf_auth_required: bool = False
    deprecated: bool = False

    @property
    def supports_tuning(self) -> bool:
        return self.tuning is not None

    def resolved_model_path(self, env: dict[str, str] | None = None) -> Path | None:
        """``model_path`` with ``${VAR}`` / ``${VAR:-default}`` and ``~`` expanded, or None."""
        if self.model_path is None:
            return None
        return Path(expand_vars(self.model_path, os.environ if env is None else env)).expanduser()

    @property
    def model_source(self) -> str:
        """What the serving code should load: the local path if there is one, else the hub id."""
        path = self.resolved_model_path()
        if path is not None:
            return str(path)
        assert self.hf_model_id, f"preset {self.name} has neither hf_model_id nor model_path"
        return self.hf_model_id

    @property
    def model_revision(self) -> str | None:
        """The hub commit ``model_source`` is loaded at: the pin, or None for a local checkpoint
        (a directory has no revisions) and for an unpinned preset."""
        return None if self.resolved_model_path() is not None else self.revision


class GpuSku(_Data):
    name: str
    aliases: tuple[str, ...] = ()
    gpu_count: int = Field(gt=0)
    gpu_memory_gib: float = Field(gt=0, description="per GPU")
    gpu_model: str
    cuda_compute: str
    vcpus: int = Field(gt=0)
    memory_gib: float = Field(gt=0)
    nvme: bool = False
    fake: bool = False

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu_count * self.gpu_memory_gib

    @property
    def supports_bfloat16(self) -> bool:
        return self.fake or float(self.cuda_compute) >= 8.0

    def describe(self) -> str:
        """E.g. ``1x16GiB V100``."""
        return f"{self.gpu_count}x{_num(self.gpu_memory_gib)}GiB {self.gpu_model}"


class MigProfile(_Data):
    """A MIG slice profile (``1g.10gb``): its memory is in its name; see gpu_skus.yaml."""

    name: str = Field(pattern=r"^[1-9][0-9]*g\.[0-9]+gb$")
    min_cuda_compute: str

    @property
    def gpu_memory_gib(self) -> float:
        return float(self.name.rsplit(".", 1)[1].removesuffix("gb"))

    def slice_sku(self, memory_gib: float, vcpus: int = 1, cuda_compute: str | None = None,
                  gpu_model: str | None = None) -> GpuSku:
        """One slice as the estimator sees a node: one GPU of the profile's memory (a MIG
        workload runs on exactly one slice, no tensor parallelism across slices)."""
        return GpuSku(name=f"MIG {self.name}", gpu_count=1, gpu_memory_gib=self.gpu_memory_gib,
                      gpu_model=f"{gpu_model or 'GPU'} MIG {self.name}",
                      cuda_compute=cuda_compute or self.min_cuda_compute, vcpus=vcpus, memory_gib=memory_gib)


def _num(value: float) -> str:
    return f"{value:g}"


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(text: str, env: dict[str, str] | os._Environ[str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (shell semantics: the default also covers empty)."""
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates that look like ``name`` (case-insensitive), best first."""
    by_lower = {c.lower(): c for c in candidates}
    return [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)]


class Catalog:
    """Presets and SKUs, indexed for lookup."""

    def __init__(
        self,
        presets: Iterable[Preset],
        skus: Iterable[GpuSku],
        architectures: Iterable[Architecture] = (),
        quantizations: Iterable[QuantizationFormat] = (),
        mig_profiles: Iterable[MigProfile] = (),
    ) -> None:
        self.mig_profiles: dict[str, MigProfile] = {m.name: m for m in mig_profiles}
        self.architectures: dict[str, Architecture] = {a.name: a for a in architectures}
        self.quantizations: dict[str, QuantizationFormat] = {q.name: q for q in quantizations}
        self.presets: dict[str, Preset] = {}
        self._hf_index: dict[str, Preset] = {}  # lower-cased Hugging Face id -> preset
        for p in presets:
            if p.name in self.presets:
                raise ValueError(f"preset {p.name} is defined twice")
            self.presets[p.name] = p
            if p.hf_model_id:
                if p.hf_model_id.lower() in self._hf_index:
                    raise ValueError(f"Hugging Face id {p.hf_model_id} is the model of two presets")
                self._hf_index[p.hf_model_id.lower()] = p
            if self.architectures and p.architecture not in self.architectures:
                raise ValueError(f"preset {p.name}: {p.architecture} is not in the architectures table")
        self.skus: dict[str, GpuSku] = {}
        self._sku_index: dict[str, GpuSku] = {}
        for s in skus:
            self.skus[s.name] = s
            for key in (s.name, *s.aliases):
                if key.lower() in self._sku_index:
                    raise ValueError(f"SKU {key} is defined twice")
                self._sku_index[key.lower()] = s

    @classmethod
    def from_files(cls, catalog_file: Path = CATALOG_FILE, sku_file: Path = SKU_FILE) -> Catalog:
        data = yaml.safe_load(catalog_file.read_text())
        sku_data = yaml.safe_load(sku_file.read_text())
        skus = sku_data["skus"]
        return cls(
            (Preset.model_validate(p) for p in data["presets"]),
            (GpuSku.model_validate(s) for s in skus),
            (Architecture.model_validate(a) for a in data.get("architectures", [])),
            (QuantizationFormat.model_validate(q) for q in data.get("quantizations", [])),
            (MigProfile.model_validate(m) for m in sku_data.get("mig_profiles", [])),
        )

    def preset(self, name: str) -> Preset | None:
        """The preset called ``name`` in the catalog, or whose Hugging Face id ``name`` is."""
        return self.presets.get(name) or self._hf_index.get(name.lower())

    def sku(self, name: str) -> GpuSku | None:
        return self._sku_index.get(name.lower())

    def architecture(self, name: str) -> Architecture | None:
        return self.architectures.get(name)

    def supported_architectures(self) -> list[str]:
        return sorted(a.name for a in self.architectures.values() if a.supported)

    def similar_presets(self, name: str) -> list[str]:
        if "/" in name:  # it looks like a Hugging Face id: suggest ids
            return close_matches(name, [p.hf_model_id for p in self.presets.values() if p.hf_model_id])
        return close_matches(name, self.presets)

    def similar_skus(self, name: str) -> list[str]:
        return close_matches(name, self.skus)

    def real_skus(self) -> list[GpuSku]:
        """The cloud SKUs (not the fake demo one), smallest GPU memory per node first."""
        return sorted(
            (s for s in self.skus.values() if not s.fake),
            key=lambda s: (s.total_gpu_memory_gib, s.gpu_count, s.vcpus, s.name),
        )


@functools.cache
def default_catalog() -> Catalog:
    """The catalog shipped with the project (parsed once per process)."""
    return Catalog.from_files()


def get_preset(name: str) -> Preset | None:
    return default_catalog().preset(name)


def get_sku(name: str) -> GpuSku | None:
    return default_catalog().sku(name)
