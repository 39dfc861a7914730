"""LangChain usage whose input_tokens leave the cache out (Bedrock Converse in langchain-aws).

LangChain's convention counts cache reads and writes in ``input_tokens``;
langchain-aws passed Bedrock's ``inputTokens`` (the non-cached tokens) with
``total_tokens`` counting all of them. Read as inclusive, such a call was
unpriced (cache larger than the input: no usage) or priced 45% low.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from costopt_core import CostEngine
from costopt_core.usage import usage_from_langchain

MODEL = "us.anthropic.claude-3-5-sonnet-20240620-v1:0"


def _bedrock(inputs: int, read: int, write: int, out: int) -> dict[str, object]:
    return {
        "input_tokens": inputs,
        "output_tokens": out,
        "total_tokens": inputs + read + write + out,
        "input_token_details": {"cache_read": read, "cache_creation": write},
    }


@pytest.mark.parametrize(
    ("inputs", "cost"),
    [(100, Decimal("0.0054")), (5000, Decimal("0.0201"))],
)
def test_bedrock_converse_usage_is_priced_with_its_cache(inputs: int, cost: Decimal) -> None:
    usage = usage_from_langchain(_bedrock(inputs, 2000, 1000, 50))
    assert usage.input_tokens == inputs + 3000
    assert (usage.cache_read_tokens, usage.cache_write_5m_tokens) == (2000, 1000)
    # $3 input, $0.30 cache read, $3.75 cache write, $15 output per million tokens.
    record = CostEngine().record_call(model=MODEL, usage=usage)
    assert record.cost_usd == cost


def test_the_langchain_convention_is_read_as_before() -> None:
    # input_tokens include the cache; total = input + output.
    usage = usage_from_langchain(
        {
            "input_tokens": 3100,
            "output_tokens": 50,
            "total_tokens": 3150,
            "input_token_details": {"cache_read": 2000, "cache_creation": 1000},
        }
    )
    assert (usage.input_tokens, usage.cache_read_tokens) == (3100, 2000)
    no_total = usage_from_langchain(
        {"input_tokens": 3100, "output_tokens": 50, "input_token_details": {"cache_read": 2000}}
    )
    assert no_total.input_tokens == 3100
