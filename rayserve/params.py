"""What a request asks of generation: how to pick tokens and when to stop.

Why apart from ``rayserve.sampling``: the request schemas build these and the scheduler reads
their limits, and neither needs torch; only the sampler that applies them to logits does.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SamplingParams(BaseModel):
    """How to pick tokens for one request, and when to stop."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(128, ge=1)
    min_new_tokens: int = Field(0, ge=0)
    temperature: float = Field(1.0, ge=0.0, le=5.0)
    top_k: int = Field(0, ge=0, description="0 = off")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    do_sample: bool = False
    seed: int | None = None
    ignore_eos: bool = False
    logprobs: int | None = Field(
        None, ge=0, le=20, description="None: no log probabilities; k: the chosen token's and the top k"
    )

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0.0
