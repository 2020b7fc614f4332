"""The pure request rules: option types, keep_alive, num_ctx resolution, reloads, truncation."""

from __future__ import annotations

from typing import Any

import pytest

from ollama_proxy.sim.rules import (
    RunnerSettings,
    SimError,
    fit_messages,
    generation_budget,
    kept_prompt_tokens,
    needs_reload,
    parse_keep_alive,
    resolve_settings,
    validate_options,
)


@pytest.mark.parametrize(("options", "expected"), [
    pytest.param(None, {}, id="absent"),
    pytest.param({"num_ctx": 8192.7}, {"num_ctx": 8192}, id="float-int-truncated"),
    pytest.param({"temperature": 0, "stop": ["x"]}, {"temperature": 0.0, "stop": ["x"]}, id="typed"),
    pytest.param({"seed": None, "mirostat": 2}, {}, id="null-and-unknown-dropped"),
])
def test_validate_options_accepts(options: Any, expected: dict[str, Any]) -> None:
    assert validate_options(options) == expected


@pytest.mark.parametrize(("options", "message"), [
    pytest.param({"num_ctx": "8192"}, 'option "num_ctx" must be of type integer', id="num_ctx-string"),
    pytest.param({"stop": "x"}, 'option "stop" must be of type array', id="stop-string"),
    pytest.param({"temperature": True}, 'option "temperature" must be of type float', id="bool-not-number"),
    pytest.param({"use_mmap": 1}, 'option "use_mmap" must be of type boolean', id="mmap-int"),
])
def test_validate_options_wrong_type_is_500(options: dict[str, Any], message: str) -> None:
    with pytest.raises(SimError) as info:
        validate_options(options)
    assert (info.value.status, info.value.message) == (500, message)


@pytest.mark.parametrize(("value", "seconds"), [
    pytest.param(None, None, id="unset"),
    pytest.param(0, 0.0, id="zero"),
    pytest.param(2.5, 2.5, id="number"),
    pytest.param("10m", 600.0, id="minutes"),
    pytest.param("1h30m", 5400.0, id="compound"),
    pytest.param("-1m", -60.0, id="negative-forever"),
    pytest.param("250ms", 0.25, id="milliseconds"),
])
def test_parse_keep_alive(value: Any, seconds: float | None) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", [
    pytest.param("300", id="unitless"), pytest.param("5 minutes", id="words"), pytest.param([1], id="list")])
def test_parse_keep_alive_rejects(value: Any) -> None:
    with pytest.raises(SimError) as info:
        parse_keep_alive(value)
    assert info.value.status == 400


def _resolve(options: dict[str, Any], modelfile: int | None = None, trained: int = 131072,
             shift: bool | None = None) -> RunnerSettings:
    return resolve_settings(options, modelfile_num_ctx=modelfile, default_num_ctx=4096,
                            trained_context=trained, shift=shift)


@pytest.mark.parametrize(("options", "modelfile", "trained", "expected"), [
    pytest.param({}, None, 131072, (4096, True), id="automatic-default"),
    pytest.param({"num_ctx": 8192}, None, 131072, (8192, False), id="explicit"),
    pytest.param({}, 32768, 131072, (32768, False), id="modelfile-is-not-automatic"),
    pytest.param({"num_ctx": 200000}, None, 131072, (131072, False), id="capped-at-trained"),
    pytest.param({}, None, 2048, (2048, True), id="default-capped-at-trained"),
    pytest.param({"num_ctx": 1}, None, 131072, (4, False), id="at-least-4"),
])
def test_resolve_settings(options: dict[str, Any], modelfile: int | None, trained: int,
                          expected: tuple[int, bool]) -> None:
    settings = _resolve(options, modelfile, trained)
    assert (settings.num_ctx, settings.automatic) == expected


AUTO_4K = RunnerSettings(4096, automatic=True)
AUTO_32K = RunnerSettings(32768, automatic=True)
EXPLICIT_8K = RunnerSettings(8192, automatic=False)
EXPLICIT_4K = RunnerSettings(4096, automatic=False)


@pytest.mark.parametrize(("runner", "wanted", "reload"), [
    pytest.param(AUTO_4K, AUTO_32K, False, id="automatic-never-compared"),
    pytest.param(AUTO_4K, EXPLICIT_8K, True, id="explicit-after-automatic"),
    pytest.param(EXPLICIT_8K, AUTO_4K, True, id="unset-after-explicit"),
    pytest.param(AUTO_4K, EXPLICIT_4K, False, id="explicit-equal-to-automatic"),
    pytest.param(EXPLICIT_8K, RunnerSettings(8192, False), False, id="same-explicit"),
    pytest.param(AUTO_4K, RunnerSettings(4096, True, shift=False), True, id="shift-differs"),
    pytest.param(AUTO_4K, RunnerSettings(4096, True, load_options={"num_batch": 256}), True, id="num-batch"),
    pytest.param(RunnerSettings(4096, True, load_options={"num_gpu": 10}), AUTO_4K, False,
                 id="num-gpu-default-ignored"),
    pytest.param(AUTO_4K, RunnerSettings(4096, True, load_options={"num_gpu": 0}), True, id="num-gpu-set"),
])
def test_needs_reload(runner: RunnerSettings, wanted: RunnerSettings, reload: bool) -> None:
    assert needs_reload(runner, wanted) is reload


def test_capped_requests_do_not_reload_each_other() -> None:
    assert not needs_reload(_resolve({"num_ctx": 200000}), _resolve({"num_ctx": 262144}))


@pytest.mark.parametrize(("tokens", "num_ctx", "kept"), [
    pytest.param(100, 4096, 100, id="fits"),
    pytest.param(4095, 4096, 4095, id="one-below"),
    pytest.param(4096, 4096, 4096 - (4096 - 5) // 2, id="at-window"),
    pytest.param(50000, 4096, 2051, id="far-over-keeps-half"),
])
def test_kept_prompt_tokens(tokens: int, num_ctx: int, kept: int) -> None:
    assert kept_prompt_tokens(tokens, num_ctx) == kept


def test_fit_messages_drops_oldest_non_system_and_keeps_last() -> None:
    messages = [{"role": "system", "content": "s"}, *({"role": "user", "content": str(i)} for i in range(5))]
    kept = fit_messages(messages, len, 3)
    assert kept == [messages[0], messages[-1]]


@pytest.mark.parametrize(("num_predict", "shift", "budget"), [
    pytest.param(None, True, 40960, id="unbounded-is-10x-ctx"),
    pytest.param(7, True, 7, id="num-predict"),
    pytest.param(None, False, 96, id="no-shift-stops-at-window"),
])
def test_generation_budget(num_predict: int | None, shift: bool, budget: int) -> None:
    assert generation_budget(num_predict, 4096, 4000, shift) == budget
