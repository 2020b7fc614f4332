"""One inference request from slot to last token, shared by the native and the /v1 handlers.

A `Turn` is a parsed generate or chat request. `generation()` gets it a runner slot (loading or
reloading on the way), renders and counts the prompt, truncates it silently as Ollama does, plans
the reply and paces its tokens. Handlers only choose the wire shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from ollama_proxy.sim.models import InstalledModel
from ollama_proxy.sim.rules import (
    RunnerSettings,
    SimError,
    fit_messages,
    generation_budget,
    kept_prompt_tokens,
    nanoseconds,
    resolve_settings,
)
from ollama_proxy.sim.scheduler import Lease
from ollama_proxy.sim.state import SimState
from ollama_proxy.sim.textgen import Reply, plan_reply, plan_tool_calls, render_chat, render_generate


@dataclass(frozen=True, slots=True)
class Turn:
    """A generate (`messages` None) or chat request, validated."""

    model: InstalledModel
    options: dict[str, Any]
    keep_alive_s: float | None = None
    shift: bool | None = None
    truncate: bool = True
    messages: Sequence[Mapping[str, Any]] | None = None
    prompt: str = ""
    system: str = ""
    suffix: str = ""
    tools: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


def settings_for(state: SimState, turn: Turn) -> RunnerSettings:
    return resolve_settings(turn.options, modelfile_num_ctx=turn.model.modelfile_num_ctx,
                            default_num_ctx=state.config.default_num_ctx,
                            trained_context=turn.model.spec.context_length, shift=turn.shift)


async def load_only(state: SimState, turn: Turn) -> None:
    """An empty prompt: load (or reload) the model, generate nothing."""
    lease = await state.scheduler.acquire(turn.model, settings_for(state, turn), turn.keep_alive_s)
    state.scheduler.release(lease)


class Generation:
    """The planned reply of one request and the modelled time it takes."""

    def __init__(self, state: SimState, lease: Lease, prompt_tokens: int, reply: Reply,
                 eval_count: int) -> None:
        self._state = state
        self._lease = lease
        self.prompt_tokens = prompt_tokens
        self.reply = reply
        self.eval_count = eval_count

    async def pieces(self) -> AsyncIterator[str]:
        """The reply's tokens, the first after the time to first token, then at the profile's rate."""
        profile, scale = self._state.config.hardware, self._state.config.time_scale
        await asyncio.sleep((profile.ttft_s + self.prompt_tokens / profile.prompt_tokens_per_s) * scale)
        if not self.reply.pieces:  # a tool call still takes its tokens' time
            await asyncio.sleep(self.eval_count / profile.tokens_per_s * scale)
        for index, piece in enumerate(self.reply.pieces):
            if index:
                await asyncio.sleep(scale / profile.tokens_per_s)
            yield piece

    def metrics(self) -> dict[str, int]:
        """The final line's metrics, modelled (unscaled); zeros are left out as Ollama's omitempty does."""
        profile = self._state.config.hardware
        load = self._lease.load_s or 0.005
        prompt = profile.ttft_s + self.prompt_tokens / profile.prompt_tokens_per_s
        evaluation = self.eval_count / profile.tokens_per_s
        values = {"total_duration": nanoseconds(load + prompt + evaluation),
                  "load_duration": nanoseconds(load),
                  "prompt_eval_count": self.prompt_tokens, "prompt_eval_duration": nanoseconds(prompt),
                  "eval_count": self.eval_count,
                  "eval_duration": nanoseconds(evaluation) if self.eval_count else 0}
        return {k: v for k, v in values.items() if v}


def _fit_prompt(state: SimState, turn: Turn, settings: RunnerSettings) -> tuple[str, int]:
    """Render and count the prompt, truncating as Ollama v0.30+ does (ref. 4.3); the text is the seed key."""
    model, num_ctx = turn.model, settings.num_ctx
    count = model.spec.tokenize
    if turn.messages is not None:
        def chat_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
            return count(render_chat(messages, turn.tools))
        messages = fit_messages(turn.messages, chat_tokens, num_ctx) if turn.truncate else list(turn.messages)
        full, text = chat_tokens(turn.messages), render_chat(messages, turn.tools)
    else:
        text = render_generate(turn.prompt, turn.system or turn.model.system, turn.suffix)
        full = count(text)
    tokens = count(text)
    if tokens >= num_ctx and not turn.truncate:
        raise SimError(400, f"request ({tokens} tokens) exceeds the available context size "
                            f"({num_ctx} tokens), try increasing it")
    if tokens >= num_ctx and not settings.shift:
        raise SimError(400, "the prompt is longer than the context length currently available to the "
                            "model; shorten the prompt, raise num_ctx or allow context shift")
    kept = kept_prompt_tokens(tokens, num_ctx, turn.options.get("num_keep", 4))
    if kept < full:
        state.stats.truncations[model.name] += 1
    state.stats.last_prompt[model.name] = {"tokens": full, "kept": kept, "num_ctx": num_ctx}
    return text, kept


@asynccontextmanager
async def generation(state: SimState, turn: Turn) -> AsyncIterator[Generation]:
    """Hold a runner slot for the request's whole life; the prompt is checked once the model is loaded."""
    settings = settings_for(state, turn)
    state.stats.record_options(turn.model.name, turn.options)
    scheduler = state.scheduler
    lease = await scheduler.acquire(turn.model, settings, turn.keep_alive_s)
    try:
        text, prompt_tokens = _fit_prompt(state, turn, settings)
        seed = turn.options.get("seed", state.config.seed)
        calls = plan_tool_calls(seed, turn.tools, turn.messages or ())
        if calls:
            reply = Reply([], "stop", calls)
            eval_count = max(turn.model.spec.tokenize(orjson.dumps(calls).decode()), 1)
        else:
            budget = generation_budget(turn.options.get("num_predict"), settings.num_ctx, prompt_tokens,
                                       settings.shift)
            reply = plan_reply(seed, turn.model.name, text, budget, state.config.reply_tokens)
            eval_count = len(reply.pieces)
        yield Generation(state, lease, prompt_tokens, reply, eval_count)
    finally:
        scheduler.release(lease)
