"""Replays the fuzz corpus: the nasty inputs the property tests found, kept as files.

Each file is named ``<target>__<what>``; the target says which reader it goes
through and what the right answer is (handled, or a typed error naming the
bad field or ``file:line``). A regression on any of them fails here by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from costopt_core.batch.job import BatchJobConfig
from costopt_core.cache.config import CacheConfig
from costopt_core.cache.engine import SemanticCache
from costopt_core.cache.keys import CacheRequest, prepare
from costopt_core.cli import app
from costopt_core.errors import ConfigurationError, UsageFormatError
from costopt_core.ledger import CostLedger
from costopt_core.pricing import PriceCatalog
from costopt_core.routing.features import extract_features
from costopt_core.routing.router import RouterConfig
from costopt_core.routing.tiers import Tier, Tiers
from costopt_core.testing import FakeEmbedder
from costopt_core.tokens import TokenCounter
from costopt_core.types import ChatRequest, Message
from costopt_core.usage import normalize_usage
from costopt_core.workload import WorkloadSample, read_calibration_samples
from langchain_costopt._convert import to_langchain_message
from langchain_costopt.cached_model import CachedChatModel
from langchain_costopt.testing import ScriptedChatModel

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(CORPUS.iterdir())
CONFIGS: dict[str, type[BaseModel]] = {
    "CacheConfig": CacheConfig,
    "BatchJobConfig": BatchJobConfig,
    "RouterConfig": RouterConfig,
}
TIERS = Tiers([Tier("small", ("gpt-4o-mini",)), Tier("frontier", ("gpt-4o",))])


def _target(path: Path) -> str:
    return path.name.split("__", 1)[0]


def test_corpus_covers_every_reader() -> None:
    targets = {_target(p) for p in FILES}
    assert targets == {
        "overrides", "messages", "config", "ledger", "sample", "calibration", "usage"
    }  # fmt: skip


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_replay(path: Path) -> None:
    target = _target(path)
    if target in ("ledger", "sample", "calibration"):
        read: Any = {
            "ledger": CostLedger.from_jsonl,
            "sample": WorkloadSample.from_jsonl,
            "calibration": lambda p: read_calibration_samples(p, TIERS),
        }[target]
        with pytest.raises(ConfigurationError) as info:
            read(path)
        line = 2 if "second_line" in path.name else 1
        assert f"{path}:{line}: " in str(info.value)
        return
    data = json.loads(path.read_text("utf-8"))
    if target == "overrides":
        with pytest.raises(ConfigurationError) as info:
            PriceCatalog.default().with_overrides(data)
        assert any(repr(name) in str(info.value) for name in data)
    elif target == "usage":
        with pytest.raises(UsageFormatError):
            normalize_usage(data)
    elif target == "config":
        for name, kwargs in data.items():
            with pytest.raises((ConfigurationError, ValidationError)) as cinfo:
                CONFIGS[name](**kwargs)
            assert next(iter(kwargs)) in str(cinfo.value)
    elif target == "messages":
        _replay_messages(data)
    else:  # pragma: no cover - a new target needs a branch
        raise AssertionError(f"no replay for {path.name}")


def _replay_messages(data: list[dict[str, Any]]) -> None:
    convo = tuple(
        Message(
            role=m["role"],
            content=m["content"],
            tool_calls=tuple(m.get("tool_calls", ())),
            tool_call_id=m.get("tool_call_id"),
        )
        for m in data
    )
    prep = prepare(CacheRequest(messages=convo), 2)
    assert prep.key == prepare(CacheRequest(messages=convo), 2).key
    assert extract_features(ChatRequest(messages=convo)).messages == sum(
        m.role != "system" for m in convo
    )
    assert TokenCounter().count_messages(convo).tokens > 0
    inner = ScriptedChatModel.from_texts(["answer"])
    cached = CachedChatModel(model=inner, semantic_cache=SemanticCache(embedder=FakeEmbedder()))
    lc = [to_langchain_message(m) for m in convo] + [HumanMessage(content="and now?")]
    assert cached.invoke(lc).content == "answer"
    assert cached.invoke(lc).content == "answer"
    assert inner.script.calls == 1


@pytest.mark.parametrize("path", [p for p in FILES if _target(p) == "ledger"], ids=lambda p: p.name)
def test_cli_report_on_corpus_ledger_is_a_usage_error(path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
