"""Marking a structured_predict's requests, for the router under any wrapper.

``structured_predict`` (and its async and stream twins, and so
``as_structured_llm``) calls ``chat`` / ``complete`` on the LLM it is called
on; nothing in those calls says the answer must parse into a class. The
router reads the mark set here to hold a cheap answer to the class's schema
(prose or off-schema JSON escalates). Every costopt LLM that can wrap a router
(``CachedLLM``, ``PrefixCachedLLM``) marks its own structured calls too, or
the router under it would pass prose that the program then fails to parse.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from llama_index.core.llms import LLM
from pydantic import BaseModel

__all__ = ["STRUCTURED", "MarksStructured", "astructured_gen", "structured", "structured_gen"]

#: The JSON schema of the output class of the ``structured_predict`` (or
#: ``as_structured_llm`` call) running in this context, if any.
STRUCTURED: ContextVar[Mapping[str, Any] | None] = ContextVar(
    "costopt_llamaindex_structured", default=None
)


@contextlib.contextmanager
def structured(output_cls: type[BaseModel]) -> Iterator[None]:
    """Mark the router's calls in this block as structured, for ``output_cls``."""
    try:
        schema: Mapping[str, Any] | None = output_cls.model_json_schema()
    except Exception:  # a class pydantic cannot describe: structured, without a schema check
        schema = {}
    token = STRUCTURED.set(schema)
    try:
        yield
    finally:
        STRUCTURED.reset(token)


def structured_gen(gen: Iterator[Any], output_cls: type[BaseModel]) -> Generator[Any, None, None]:
    # The program calls the LLM while it is iterated: each step runs marked.
    while True:
        with structured(output_cls):
            try:
                item = next(gen)
            except StopIteration:
                return
        yield item


async def astructured_gen(
    gen: AsyncIterator[Any], output_cls: type[BaseModel]
) -> AsyncGenerator[Any, None]:
    while True:
        with structured(output_cls):
            try:
                item = await anext(gen)
            except StopAsyncIteration:
                return
        yield item


class MarksStructured(LLM):
    """A LlamaIndex LLM base whose structured calls run marked (see the module);
    put it before the LLM class it refines: ``class X(MarksStructured, LLM)``."""

    def structured_predict(self, output_cls: Any, prompt: Any, *args: Any, **kwargs: Any) -> Any:
        with structured(output_cls):
            return super().structured_predict(output_cls, prompt, *args, **kwargs)

    async def astructured_predict(
        self, output_cls: Any, prompt: Any, *args: Any, **kwargs: Any
    ) -> Any:
        with structured(output_cls):
            return await super().astructured_predict(output_cls, prompt, *args, **kwargs)

    def stream_structured_predict(
        self, output_cls: Any, prompt: Any, *args: Any, **kwargs: Any
    ) -> Generator[Any, None, None]:
        gen = super().stream_structured_predict(output_cls, prompt, *args, **kwargs)
        return structured_gen(gen, output_cls)

    async def astream_structured_predict(
        self, output_cls: Any, prompt: Any, *args: Any, **kwargs: Any
    ) -> AsyncGenerator[Any, None]:
        with structured(output_cls):
            gen = await super().astream_structured_predict(output_cls, prompt, *args, **kwargs)
        return astructured_gen(gen, output_cls)
