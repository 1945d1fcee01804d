"""Request bodies of the HTTP API, as pydantic models.

Why strict models: a malformed body must become a 4xx that tells the caller what is wrong,
never a 500 from deep inside generation. Two dialects are accepted:

* Kaito's legacy ``POST /chat`` (``prompt`` or ``messages`` + HF-style ``generate_kwargs``),
  answered with ``{"Result": text}``.
* OpenAI's ``/v1/chat/completions`` and ``/v1/completions``; unknown fields that OpenAI
  clients commonly send are ignored; ``n`` choices and log probabilities are served,
  unsupported features (beam search, ``best_of``) are rejected explicitly.

Each request also says, in its own dialect's terms, what it asks of generation (as vLLM's
protocol models do): its prompt (``prompt_input``), how many tokens it wants
(``token_limit``), its stop strings and ``to_sampling_params``. The service does the rest
the same way for all three, so an HTTP handler only parses and formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rayserve.errors import RequestError
from rayserve.params import SamplingParams

Role = Literal["system", "user", "assistant", "tool", "developer"]

# torch.Generator.manual_seed takes [-2**63, 2**64); a seed outside it crashed sampling (500)
SEED_RANGE = {"ge": -(2**63), "lt": 2**64, "description": "a 64-bit integer"}


@dataclass(frozen=True)
class PromptInput:
    """What a request asks the model to continue; exactly one field is set: chat messages
    (rendered with the model's chat template), plain text, or token ids taken as they are."""

    messages: list[tuple[str, str]] | None = None
    text: str | None = None
    token_ids: list[int] | None = None


class GenerationRequest(Protocol):
    """What the service needs of a request body, whatever its dialect."""

    model: str | None

    def prompt_input(self) -> PromptInput: ...

    def stops(self) -> list[str] | None: ...

    def token_limit(self, prompt_len: int, context: int) -> tuple[int | None, str]:
        """Tokens asked for (``None``: the server's default) and the field to name if they
        do not fit; called once the prompt is known to fit the context window."""
        ...

    def to_sampling_params(self, max_new_tokens: int, prompt_len: int) -> SamplingParams: ...


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Role
    content: str | list[ContentPart] | None = ""

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class GenerateKwargs(BaseModel):
    """HF ``generate`` keywords as Kaito's legacy server took them (same defaults).

    Extra keys are accepted and ignored, as Kaito passed them through to a pipeline."""

    model_config = ConfigDict(extra="allow")

    max_length: int = Field(200, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    min_length: int = Field(0, ge=0)
    min_new_tokens: int | None = Field(None, ge=0)
    do_sample: bool = True
    early_stopping: bool = False
    num_beams: int = Field(1, ge=1, le=1, description="beam search is not supported")
    temperature: float = Field(1.0, ge=0.0, le=5.0)
    top_k: int = Field(10, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    typical_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    seed: int | None = Field(None, **SEED_RANGE)


class LegacyChatRequest(BaseModel):
    """Kaito's ``/chat``: exactly one of ``prompt`` / ``messages``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    model: str | None = Field(None, description="extension: base model or adapter name")
    return_full_text: bool = True
    clean_up_tokenization_spaces: bool = False
    prefix: str | None = None
    handle_long_generation: str | None = None
    generate_kwargs: GenerateKwargs = Field(default_factory=GenerateKwargs)

    @model_validator(mode="after")
    def _one_input(self) -> LegacyChatRequest:
        if self.prompt is None and not self.messages:
            raise ValueError("Text generation parameter prompt or conversational parameter messages required")
        if self.prompt is not None and self.messages:
            raise ValueError("give either prompt or messages, not both")
        return self

    def prompt_input(self) -> PromptInput:
        if self.messages:
            return PromptInput(messages=[(m.role, m.text()) for m in self.messages])
        return PromptInput(text=(self.prefix or "") + (self.prompt or ""))

    def stops(self) -> list[str] | None:
        return None

    def token_limit(self, prompt_len: int, context: int) -> tuple[int | None, str]:
        """``max_new_tokens``, or what HF's ``max_length`` (prompt + output, a ceiling, so
        clamped to the context window) leaves after the prompt."""
        gk, param = self.generate_kwargs, "generate_kwargs.max_new_tokens"
        if gk.max_new_tokens is not None:
            return gk.max_new_tokens, param
        wanted = min(gk.max_length, context) - prompt_len
        if wanted <= 0:
            raise RequestError(
                400, f"max_length={gk.max_length} leaves no room after the {prompt_len}-token prompt"
            )
        return wanted, param

    def to_sampling_params(self, max_new_tokens: int, prompt_len: int) -> SamplingParams:
        gk = self.generate_kwargs
        min_new = gk.min_new_tokens if gk.min_new_tokens is not None else max(0, gk.min_length - prompt_len)
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new,
            do_sample=gk.do_sample,
            temperature=gk.temperature,
            top_k=gk.top_k,
            top_p=gk.top_p,
            repetition_penalty=gk.repetition_penalty,
            seed=gk.seed,
        )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _OpenAIBase(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="vLLM extension")
    min_tokens: int = Field(0, ge=0, description="vLLM extension")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="vLLM extension")
    n: int = Field(1, ge=1, le=16, description="choices per request, each its own engine sequence")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, **SEED_RANGE)
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    def stops(self) -> list[str] | None:
        return self.stop  # type: ignore[return-value]  # the validator made it a list

    def token_limit(self, prompt_len: int, context: int) -> tuple[int | None, str]:
        return self.max_tokens, "max_tokens"

    def wanted_logprobs(self) -> int | None:
        """How many alternatives each token's log probability comes with (None: no logprobs)."""
        return None

    def to_sampling_params(self, max_new_tokens: int, prompt_len: int) -> SamplingParams:
        return SamplingParams(
            logprobs=self.wanted_logprobs(),
            max_new_tokens=max_new_tokens,
            min_new_tokens=min(self.min_tokens, max_new_tokens),
            do_sample=self.temperature > 0,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            seed=self.seed,
            ignore_eos=self.ignore_eos,
        )


class ChatCompletionRequest(_OpenAIBase):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def wanted_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def prompt_input(self) -> PromptInput:
        return PromptInput(messages=[(m.role, m.text()) for m in self.messages])

    def token_limit(self, prompt_len: int, context: int) -> tuple[int | None, str]:
        return self.max_completion_tokens or self.max_tokens, "max_tokens"


class CompletionRequest(_OpenAIBase):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20, description="alternatives per token (OpenAI: up to 5)")

    @field_validator("prompt")
    @classmethod
    def _single(cls, v: str | list[str] | list[int]) -> str | list[int]:
        if isinstance(v, list) and v and isinstance(v[0], str):
            if len(v) != 1:
                raise ValueError("only one prompt per request is supported")
            return v[0]
        if isinstance(v, list) and not v:
            raise ValueError("prompt must not be empty")
        return v

    def wanted_logprobs(self) -> int | None:
        return self.logprobs

    def prompt_input(self) -> PromptInput:
        if isinstance(self.prompt, str):
            return PromptInput(text=self.prompt)
        return PromptInput(token_ids=list(self.prompt))  # type: ignore[arg-type]  # one prompt
