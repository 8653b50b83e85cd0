"""A local OpenAI-compatible server for any Hugging Face causal LM: the API subset a judge needs.

Nothing is downloaded: the caller builds the model from a config or loads it from a folder and
hands it over with its tokenizer. Routes:

- ``POST /v1/chat/completions``: ``model``, ``messages`` (``role``/``content`` strings),
  ``max_tokens`` or ``max_completion_tokens``, ``temperature``, ``n``, ``seed``, ``logprobs`` +
  ``top_logprobs``, ``stop``; OpenAI's ``chat.completion`` reply.
- ``POST /v1/completions``: the same with a ``prompt`` string and the legacy ``logprobs``
  integer; OpenAI's ``text_completion`` reply.
- ``GET /v1/models`` (the one model, as ``model_name``) and ``GET /health``.

**Prompt.** A chat prompt is the tokenizer's chat template when it has one
(``apply_chat_template(messages, add_generation_prompt=True)``, tokenized without adding special
tokens: the template places them), else the plain fallback ``"{role}: {content}\\n"`` per message
followed by ``"assistant: "``. The fallback and a completion prompt are encoded as
:func:`densereward.models.language.encode_prompts` does: the BOS token (if any), then the text.
The request's ``model`` is accepted whatever it names; replies name ``model_name``.

**Sampling.** The prompt runs one forward pass and its KV cache is shared by the ``n`` samples,
which then advance together, one token a step: ``y_t ~ softmax(z_t / τ)`` with ``z_t`` the
model's logits and ``τ`` the ``temperature`` (``τ = 0``: ``y_t = argmax z_t``). Draws come from one
``torch.Generator`` seeded with ``seed`` (unseeded: a fresh random seed), so a request with a seed
is answered identically every time, alone or among concurrent requests: the model runs in a single
worker thread, one request at a time, and the tokenizer is only used there too.

**Log-probabilities** are the model's, at temperature 1 whatever ``τ`` sampled with (as OpenAI
reports them): ``logprob_t = log softmax(z_t)[y_t] = z_t[y_t] - log Σ_v exp z_t[v]``;
``top_logprobs`` are the ``k`` largest ``log softmax(z_t)[v]``, largest first. A token's text is
the token decoded alone (special tokens included).

**Ends.** A sample ends at an end-of-sequence token (the tokenizer's and the generation config's),
when its text (special tokens skipped) first contains a ``stop`` string, or after ``max_tokens``
tokens; ``finish_reason`` is ``"stop"`` for the first two and ``"length"`` for the last. The text
is cut before the first stop string and never holds the EOS token; the log-probabilities list
every generated token but a final EOS (so for a stop string, up to the token that completed it);
``usage.completion_tokens`` counts every generated token, EOS included.

Every refusal is a status and one line, ``{"detail": "..."}``: 413 for a body over
``max_request_bytes``, 422 for a body that is not a request above (the field named: unknown
fields are refused, not ignored, so an option this server does not honour is never silently
dropped), 400 for a prompt the template refuses or that does not fit the model's positions with
``max_tokens``, 500 for a failure while generating (the traceback goes to the server's log only).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pydantic
import torch
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from densereward.adapters.server import Refusal, one_line, read_body, refusing_app, run_app
from densereward.core.errors import ConfigError
from densereward.models.language import cache_keyword, encode_prompts

if TYPE_CHECKING:  # transformers takes seconds to import; the caller has already loaded it
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger("densereward.chat")

MAX_SAMPLES = 16
MAX_TOP_LOGPROBS = 20
MAX_STOPS = 4


# --------------------------------------------------------------------------- requests
class Options(BaseModel):
    """What both routes take. Types are strict (a number is not a string); unknown fields are
    refused."""

    model_config = ConfigDict(strict=True, extra="forbid")

    model: str
    """accepted whatever it names (there is one model); the reply names ``model_name``"""
    max_tokens: int | None = Field(None, ge=1)
    """most tokens to generate per sample, up to the server's ``max_new_tokens_limit``"""
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    """sampling temperature ``τ``; 0 is greedy decoding"""
    n: int = Field(1, ge=1, le=MAX_SAMPLES)
    """samples for the prompt, drawn together from its shared KV cache"""
    seed: int | None = None
    """seed of the request's random generator: the same seed, the same samples"""
    stop: str | list[str] | None = None
    """up to 4 non-empty strings; a sample ends where its text first holds one"""
    stream: Literal[False] = False
    """streaming is not served"""
    user: str | None = None
    """an end-user name, for the client's logs; not used"""

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS:
            raise Refusal(422, f"field 'stop': {len(stops)} strings, at most {MAX_STOPS}")
        if any(not s for s in stops):
            raise Refusal(422, "field 'stop': a stop string is empty")
        return stops


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str


class ChatRequest(Options):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1)
    """the conversation, rendered by the chat template (or the plain fallback)"""
    max_completion_tokens: int | None = Field(None, ge=1)
    """OpenAI's newer name for ``max_tokens``; give one of the two"""
    logprobs: bool = False
    """return each generated token's log-probability"""
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    """with ``logprobs``: also the ``k`` most likely tokens at each position"""


class CompletionRequest(Options):
    """``POST /v1/completions``."""

    prompt: str
    """the text to continue"""
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    """legacy form: return each token's log-probability and the ``k`` most likely tokens (the
    chosen one added when it is not among them, as OpenAI does)"""


FIELDS = set(ChatRequest.model_fields) | set(CompletionRequest.model_fields)
FIELDS |= set(Message.model_fields)
RequestT = TypeVar("RequestT", bound=Options)


def parse(kind: type[RequestT], body: bytes) -> RequestT:
    """``body`` as a ``kind`` request, or a 422 naming the first bad field (and index)."""
    try:
        return kind.model_validate_json(body)
    except pydantic.ValidationError as error:
        problems = error.errors(include_url=False, include_context=False)
        first = problems[0]
        # a union's error location also names the member it tried (``stop.str``): keep fields
        parts = [p for p in first["loc"] if isinstance(p, int) or p in FIELDS]
        if not parts and first["type"] == "extra_forbidden":
            parts = list(first["loc"])
        where = "".join(
            f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part))
            for i, part in enumerate(parts)
        )
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        message = f"field '{where}': {first['msg']}" if where else f"body: {first['msg']}"
        raise Refusal(422, one_line(message + more)) from None


# --------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class Sample:
    """One generated continuation."""

    text: str
    """decoded with special tokens skipped, cut before the first stop string"""
    finish_reason: Literal["stop", "length"]
    tokens: list[str]
    """each token decoded alone; a final EOS left out"""
    logprobs: list[float]
    """``log softmax(z_t)[y_t]`` of each token in ``tokens``"""
    top: list[list[tuple[str, float]]]
    """the ``k`` most likely tokens at each position, largest log-probability first"""
    generated: int
    """tokens generated, EOS included (``usage.completion_tokens``)"""


def end_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Ids that end a sample: the tokenizer's EOS and the generation config's (an int or a list:
    chat models often end a turn with a token that is not the tokenizer's EOS)."""
    ends = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    if isinstance(extra, int):
        ends.add(extra)
    elif isinstance(extra, list):
        ends.update(int(i) for i in extra)
    return ends


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Tensor,
    *,
    n: int,
    max_new_tokens: int,
    temperature: float,
    generator: torch.Generator,
    stops: Sequence[str] = (),
    top_logprobs: int = 0,
) -> list[Sample]:
    """``n`` continuations of ``prompt_ids`` ``[P]`` (see the module docstring for the contract).

    The prompt is prefilled once; its cache is repeated ``n`` times
    (``DynamicCache.batch_repeat_interleave``) and the samples advance together. A sample that
    has ended keeps drawing (its tokens are dropped), so the generator's draws, and hence every
    sample, depend only on the request.
    """
    was_training = model.training
    model.eval()
    try:
        device = prompt_ids.device
        width = prompt_ids.shape[0]
        # masks are all ones (nothing is padded); passing them keeps a generated pad token from
        # being taken for padding
        mask = torch.ones((1, width), dtype=torch.long, device=device)
        out = model(input_ids=prompt_ids.unsqueeze(0), attention_mask=mask, use_cache=True)
        keyword = cache_keyword(model)
        cache = getattr(out, keyword)
        logits = out.logits[:, -1].float()
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, 0)
        mask = mask.expand(n, width)
        ends = end_tokens(model, tokenizer)
        k = min(top_logprobs, logits.shape[-1])
        ids: list[list[int]] = [[] for _ in range(n)]
        chosen: list[list[float]] = [[] for _ in range(n)]
        top: list[list[list[tuple[int, float]]]] = [[] for _ in range(n)]
        reason: list[Literal["stop", "length"] | None] = [None] * n
        for step in range(max_new_tokens):
            logp = torch.log_softmax(logits, -1)
            if temperature == 0.0:
                token = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, -1)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            picked = logp.gather(-1, token.unsqueeze(-1)).squeeze(-1).tolist()
            tokens = token.tolist()
            if k:
                values, indices = logp.topk(k, -1)
                best = [
                    list(zip(i, v, strict=True))
                    for i, v in zip(indices.tolist(), values.tolist(), strict=True)
                ]
            for row in range(n):
                if reason[row] is not None:
                    continue
                ids[row].append(tokens[row])
                chosen[row].append(picked[row])
                if k:
                    top[row].append(best[row])
                if tokens[row] in ends:
                    reason[row] = "stop"
                elif stops:
                    text = tokenizer.decode(ids[row], skip_special_tokens=True)
                    if any(s in text for s in stops):
                        reason[row] = "stop"
            if all(r is not None for r in reason) or step == max_new_tokens - 1:
                break
            position = torch.full((n, 1), width + step, dtype=torch.long, device=device)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            out = model(
                input_ids=token.unsqueeze(-1),
                attention_mask=mask,
                position_ids=position,
                use_cache=True,
                **{keyword: cache},
            )
            cache, logits = getattr(out, keyword), out.logits[:, -1].float()
    finally:
        model.train(was_training)
    return [
        _finish(tokenizer, ids[row], chosen[row], top[row], reason[row] or "length", ends, stops)
        for row in range(n)
    ]


def _finish(
    tokenizer: PreTrainedTokenizerBase,
    ids: list[int],
    chosen: list[float],
    top: list[list[tuple[int, float]]],
    reason: Literal["stop", "length"],
    ends: set[int],
    stops: Sequence[str],
) -> Sample:
    generated = len(ids)
    if ids and ids[-1] in ends:
        ids, chosen, top = ids[:-1], chosen[:-1], top[:-1]
    text = str(tokenizer.decode(ids, skip_special_tokens=True))
    cuts = [text.find(s) for s in stops if s in text]
    if cuts:
        text = text[: min(cuts)]

    def piece(token: int) -> str:
        return str(tokenizer.decode([token], skip_special_tokens=False))

    return Sample(
        text=text,
        finish_reason=reason,
        tokens=[piece(i) for i in ids],
        logprobs=chosen,
        top=[[(piece(i), v) for i, v in position] for position in top],
        generated=generated,
    )


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> list[int]:
    """Prompt ids of a conversation: the chat template when the tokenizer has one, else the
    plain fallback ``"{role}: {content}\\n"`` per message, then ``"assistant: "``, after BOS."""
    turns = [{"role": m.role, "content": m.content} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        except Exception as error:  # jinja's TemplateError, or the template's raise_exception
            raise Refusal(
                400, one_line(f"field 'messages': the chat template refused them: {error}")
            ) from None
        return list(tokenizer(str(text), add_special_tokens=False)["input_ids"])
    return render_prompt(tokenizer, plain_chat([(t["role"], t["content"]) for t in turns]))


def plain_chat(messages: Sequence[tuple[str, str]]) -> str:
    """The plain rendering of a conversation for a tokenizer with no chat template:
    ``"{role}: {content}\\n"`` per message, then ``"assistant: "``.

    >>> plain_chat([("user", "1+1=2?")])
    'user: 1+1=2?\\nassistant: '
    """
    return "".join(f"{role}: {content}\n" for role, content in messages) + "assistant: "


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Prompt ids of a completion prompt: BOS (if any), then the text."""
    ids, _ = encode_prompts(tokenizer, [prompt])
    return [int(i) for i in ids[0].tolist()]


# --------------------------------------------------------------------------- the app
class ModelWorker:
    """Requests into ``generate`` calls, one at a time in one worker thread (the model and the
    tokenizer are touched nowhere else)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_new_tokens_limit: int,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens_limit = max_new_tokens_limit
        positions = getattr(model.config, "max_position_embeddings", None)
        self.positions = positions if isinstance(positions, int) else None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="densereward-chat")

    async def run(
        self, request: Options, render: Callable[[], list[int]], top_logprobs: int, default: int
    ) -> tuple[int, list[Sample]]:
        """``(prompt tokens, samples)`` for ``request``, whose prompt ``render`` encodes."""
        limit = self.max_new_tokens_limit
        wanted = request.max_tokens
        name = "max_tokens"
        if isinstance(request, ChatRequest) and request.max_completion_tokens is not None:
            if wanted is not None:
                raise Refusal(422, "field 'max_completion_tokens': give it or max_tokens, not both")
            wanted, name = request.max_completion_tokens, "max_completion_tokens"
        if wanted is not None and wanted > limit:
            raise Refusal(422, f"field '{name}': {wanted} is over this server's limit of {limit}")
        stops = request.stops()

        def job() -> tuple[int, list[Sample]]:
            prompt = render()
            if not prompt:
                raise Refusal(400, "the prompt is empty once tokenized")
            room = self.positions - len(prompt) if self.positions is not None else limit
            if wanted is None and room < 1:
                raise Refusal(
                    400,
                    f"the prompt of {len(prompt)} tokens fills the model's {self.positions} positions",
                )
            max_new_tokens = wanted if wanted is not None else min(default, limit, room)
            if max_new_tokens > room:
                raise Refusal(
                    400,
                    f"field '{name}': a prompt of {len(prompt)} tokens and {max_new_tokens} new "
                    f"tokens are over the model's {self.positions} positions",
                )
            device = next(self.model.parameters()).device
            generator = torch.Generator(device=device)
            if request.seed is not None:
                generator.manual_seed(request.seed)
            else:
                generator.seed()
            samples = generate(
                self.model,
                self.tokenizer,
                torch.tensor(prompt, dtype=torch.long, device=device),
                n=request.n,
                max_new_tokens=max_new_tokens,
                temperature=request.temperature,
                generator=generator,
                stops=stops,
                top_logprobs=top_logprobs,
            )
            return len(prompt), samples

        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, job)
        except Refusal:
            raise
        except Exception as error:
            logger.exception("generation failed")
            raise Refusal(
                500, one_line(f"generation failed: {type(error).__name__}: {error}")
            ) from None

    def close(self) -> None:
        self._worker.shutdown(wait=True)


def _envelope(
    prefix: str,
    kind: str,
    model_name: str,
    choices: list[dict[str, Any]],
    prompt_tokens: int,
    samples: Sequence[Sample],
) -> dict[str, Any]:
    """OpenAI's reply around ``choices``: a fresh ``id``, ``object``, ``created``, ``model``,
    ``usage``."""
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model_name,
        "choices": choices,
        "usage": _usage(prompt_tokens, samples),
    }


def _usage(prompt_tokens: int, samples: Sequence[Sample]) -> dict[str, int]:
    completion = sum(s.generated for s in samples)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def _chat_logprobs(sample: Sample) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    content = []
    for position, (token, logprob) in enumerate(zip(sample.tokens, sample.logprobs, strict=True)):
        best = sample.top[position] if sample.top else []
        content.append({**entry(token, logprob), "top_logprobs": [entry(*t) for t in best]})
    return {"content": content}


def _legacy_logprobs(sample: Sample, offset: int) -> dict[str, Any]:
    offsets = []
    for token in sample.tokens:
        offsets.append(offset)
        offset += len(token)
    top = []
    for position, (token, logprob) in enumerate(zip(sample.tokens, sample.logprobs, strict=True)):
        best = dict(sample.top[position]) if sample.top else {}
        best.setdefault(token, logprob)
        top.append(best)
    return {
        "tokens": sample.tokens,
        "token_logprobs": sample.logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    }


def _schema(kind: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": kind.model_json_schema()}},
        }
    }


def _models_route(app: FastAPI, model_name: str) -> None:
    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry = {"id": model_name, "object": "model", "created": 0, "owned_by": "densereward"}
        return {"object": "list", "data": [entry]}


def _chat_choices(samples: Sequence[Sample], logprobs: bool) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "message": {"role": "assistant", "content": s.text},
            "logprobs": _chat_logprobs(s) if logprobs else None,
            "finish_reason": s.finish_reason,
        }
        for i, s in enumerate(samples)
    ]


def make_chat_app(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    model_name: str = "local",
    max_request_bytes: int = 1 << 20,
    max_new_tokens_limit: int = 512,
) -> FastAPI:
    """The FastAPI app serving ``model`` through OpenAI's chat and completion routes.

    ``max_request_bytes`` bounds a request body (413 above it), ``max_new_tokens_limit`` the
    ``max_tokens`` a request may ask for (422 above it). Left out, ``max_tokens`` is that limit
    for a chat (OpenAI's 16 for a legacy completion), capped by the positions the prompt leaves.
    The model is put in eval mode while it generates.
    """
    if max_request_bytes < 1:
        raise ConfigError("max_request_bytes", f"must be >= 1, got {max_request_bytes}")
    if max_new_tokens_limit < 1:
        raise ConfigError("max_new_tokens_limit", f"must be >= 1, got {max_new_tokens_limit}")
    worker = ModelWorker(model, tokenizer, max_new_tokens_limit)
    app = refusing_app(
        "densereward chat",
        f"OpenAI-compatible chat and completions of the local model '{model_name}'.",
        worker.close,
    )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": model_name}

    _models_route(app, model_name)

    @app.post("/v1/chat/completions", openapi_extra=_schema(ChatRequest))
    async def chat(request: Request) -> dict[str, Any]:
        parsed = parse(ChatRequest, await read_body(request, max_request_bytes))
        if parsed.top_logprobs is not None and not parsed.logprobs:
            raise Refusal(422, "field 'top_logprobs': needs logprobs set to true")
        prompt_tokens, samples = await worker.run(
            parsed,
            lambda: render_chat(tokenizer, parsed.messages),
            parsed.top_logprobs or 0,
            max_new_tokens_limit,
        )
        choices = _chat_choices(samples, bool(parsed.logprobs))
        return _envelope("chatcmpl", "chat.completion", model_name, choices, prompt_tokens, samples)

    @app.post("/v1/completions", openapi_extra=_schema(CompletionRequest))
    async def complete(request: Request) -> dict[str, Any]:
        parsed = parse(CompletionRequest, await read_body(request, max_request_bytes))
        prompt_tokens, samples = await worker.run(
            parsed, lambda: render_prompt(tokenizer, parsed.prompt), parsed.logprobs or 0, 16
        )
        choices = [
            {
                "index": i,
                "text": s.text,
                "logprobs": (
                    _legacy_logprobs(s, len(parsed.prompt)) if parsed.logprobs is not None else None
                ),
                "finish_reason": s.finish_reason,
            }
            for i, s in enumerate(samples)
        ]
        return _envelope("cmpl", "text_completion", model_name, choices, prompt_tokens, samples)

    return app


def serve_chat(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model_name: str = "local",
    max_request_bytes: int = 1 << 20,
    max_new_tokens_limit: int = 512,
    log_level: str = "info",
    on_ready: Callable[[str, int], None] | None = None,
) -> None:
    """Serve ``model`` with uvicorn until SIGINT or SIGTERM (as ``adapters.server.serve``).

    Either signal shuts down gracefully (requests in flight are answered) and returns normally;
    ``on_ready(host, port)`` is called once the socket listens (``port=0`` picks a free port).
    """
    run_app(
        make_chat_app(
            model,
            tokenizer,
            model_name=model_name,
            max_request_bytes=max_request_bytes,
            max_new_tokens_limit=max_new_tokens_limit,
        ),
        host,
        port,
        log_level,
        on_ready,
    )


def load_model(
    model: str | Path, tokenizer: str | Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from ``save_pretrained`` folders (the tokenizer's defaults
    to the model's), in eval mode; a one-line ``ConfigError`` naming the folder otherwise."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for option, folder in (("model", model), ("--tokenizer", tokenizer if tokenizer else model)):
        if not Path(folder).is_dir():
            raise ConfigError(option, f"{folder} is not a folder")
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(model))
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(
            "model", f"cannot load a causal LM from {model}: {one_line(str(error))}"
        ) from None
    try:
        words = AutoTokenizer.from_pretrained(str(tokenizer if tokenizer else model))
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(
            "--tokenizer",
            f"cannot load a tokenizer from {tokenizer or model}: {one_line(str(error))}",
        ) from None
    return loaded.eval(), words


# --------------------------------------------------------------------------- scripted replies
def load_replies(path: str | Path) -> list[str]:
    """The replies of a script file: JSON lines, each ``{"content": "..."}``; one-line errors
    naming the file and the line."""
    import json

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError("--replies", f"{path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError) as error:
        raise ConfigError("--replies", f"{path}: not a text file ({error})") from None
    replies = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError("--replies", f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("content"), str):
            raise ConfigError("--replies", f'{path}:{number}: expected {{"content": "..."}}')
        replies.append(record["content"])
    if not replies:
        raise ConfigError("--replies", f"{path}: holds no replies")
    return replies


def make_scripted_chat_app(
    replies: Sequence[str], *, model_name: str = "scripted", max_request_bytes: int = 1 << 20
) -> FastAPI:
    """OpenAI's chat route answered from a script: each request's ``n`` choices are the next
    ``n`` replies, in order, whatever it asks; 503 once the script is used up.

    It stands in for a model where none can run (tests, a replay of a recorded session) and
    speaks the protocol exactly as :func:`make_chat_app` does: the same request validation, the
    same reply envelope, so a client cannot tell the two apart but by the text.
    """
    script = list(replies)
    position = 0
    lock = asyncio.Lock()
    app = refusing_app(
        "densereward chat (scripted)",
        f"OpenAI-compatible chat replies from a script of {len(script)}.",
        lambda: None,
    )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "replies_left": len(script) - position}

    _models_route(app, model_name)

    @app.post("/v1/chat/completions", openapi_extra=_schema(ChatRequest))
    async def chat(request: Request) -> dict[str, Any]:
        nonlocal position
        parsed = parse(ChatRequest, await read_body(request, max_request_bytes))
        if parsed.logprobs:
            raise Refusal(422, "field 'logprobs': a scripted reply has no log-probabilities")
        async with lock:
            if position + parsed.n > len(script):
                raise Refusal(
                    503,
                    f"the script's {len(script)} replies are used up "
                    f"({len(script) - position} left, {parsed.n} asked)",
                )
            texts = script[position : position + parsed.n]
            position += parsed.n
        samples = [Sample(t, "stop", [], [], [], len(t.split())) for t in texts]
        prompt_words = sum(len(m.content.split()) for m in parsed.messages)
        choices = _chat_choices(samples, False)
        return _envelope("chatcmpl", "chat.completion", model_name, choices, prompt_words, samples)

    return app
