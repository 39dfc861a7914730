"""``CostEngine``: the one object that wires prices, ledger, embedder and budgets.

Every adapter takes an engine (or uses :func:`default_engine`), so a LangChain
chain and a LlamaIndex query engine in one process feed one ledger and share
one embedder.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from costopt_core.budgets import Budget, BudgetDecision
from costopt_core.embeddings import CachingEmbedder, Embedder, SentenceTransformerEmbedder
from costopt_core.errors import ConfigurationError
from costopt_core.ledger import CostLedger, utc_now
from costopt_core.overhead import recorded_as
from costopt_core.pricing import (
    CallPricer,
    PriceCatalog,
    PricedCall,
    attribute_savings,
    cost_of,
    estimate_cost,
)
from costopt_core.tokens import TokenCounter, default_counter, upper_bound_tokens
from costopt_core.types import CallMode, CallOutcome, CallRecord, Message, Usage

__all__ = [
    "DEFAULT_BASELINE_MODEL",
    "CostEngine",
    "current_engine",
    "default_engine",
    "engine_scope",
    "set_default_engine",
    "split_usage",
]

#: The frontier model savings are measured against unless configured otherwise.
DEFAULT_BASELINE_MODEL = "gpt-4o"
# A removal record is priced as a call that sent nothing, with the removed tokens on top.
_NOTHING_SENT = Usage(input_tokens=0, output_tokens=0)


def _apportion(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in whole tokens in proportion to ``weights``, summing to ``total``.

    Largest remainders get the leftover tokens (ties to the earlier share); all
    weights zero split it evenly.
    """
    n = len(weights)
    scale = sum(weights)
    if scale <= 0:
        weights, scale = [1] * n, n
    shares = [total * w // scale for w in weights]
    by_remainder = sorted(range(n), key=lambda i: (-(total * weights[i] % scale), i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def split_usage(
    total: Usage, input_weights: Sequence[int], output_weights: Sequence[int]
) -> list[Usage]:
    """Split one request's usage over the prompts it answered (a completion batch).

    A completion API answers several prompts in one request and reports their
    usage summed (OpenAI's ``/completions``). Each prompt's share of the input
    kinds follows ``input_weights`` (e.g. its counted prompt tokens), of the
    output kinds ``output_weights`` (its counted answer tokens). Every kind
    adds up exactly to ``total``'s, so the shares price to what the provider
    billed; each share is consistent (its cached tokens within its input, its
    reasoning within its output). The shares are estimates: record them so.

    Args:
        total: the usage the provider reported for the whole request.
        input_weights: one non-negative weight per prompt for input tokens.
        output_weights: one per prompt for output tokens (same length).

    Returns:
        One ``Usage`` per prompt; a kind unknown in ``total`` is unknown in each.

    Raises:
        ConfigurationError: the weight lists differ in length, are empty, or
            hold a negative weight.
    """
    n = len(input_weights)
    if n == 0 or len(output_weights) != n or min(*input_weights, *output_weights) < 0:
        raise ConfigurationError(
            f"split_usage needs one non-negative input and output weight per prompt, got "
            f"{list(input_weights)!r} and {list(output_weights)!r}"
        )

    def part(value: int | None, weights: Sequence[int]) -> list[int | None]:
        return [None] * n if value is None else list(_apportion(value, weights))

    read = part(total.cache_read_tokens, input_weights)
    w5m = part(total.cache_write_5m_tokens, input_weights)
    w1h = part(total.cache_write_1h_tokens, input_weights)
    # The uncached input and each cached kind are split apart, and each share's
    # input is their sum: rounding can never leave a share more cached than input.
    uncached = part(total.uncached_input_tokens, input_weights)
    inputs = [
        None if u is None else u + (read[i] or 0) + (w5m[i] or 0) + (w1h[i] or 0)
        for i, u in enumerate(uncached)
    ]
    reasoning = part(total.reasoning_tokens, output_weights)
    if total.output_tokens is not None and total.reasoning_tokens is not None:
        # Likewise the answer and its reasoning (which output_tokens includes).
        rest = part(max(total.output_tokens - total.reasoning_tokens, 0), output_weights)
        outputs: list[int | None] = [(r or 0) + (reasoning[i] or 0) for i, r in enumerate(rest)]
    else:
        outputs = part(total.output_tokens, output_weights)
    return [
        Usage(
            input_tokens=inputs[i],
            output_tokens=outputs[i],
            cache_read_tokens=read[i],
            cache_write_5m_tokens=w5m[i],
            cache_write_1h_tokens=w1h[i],
            reasoning_tokens=reasoning[i],
        )
        for i in range(n)
    ]


class CostEngine:
    """Prices calls, records them, enforces budgets; shared by every adapter.

    Args:
        catalog: model prices; the shipped ``prices.json`` by default.
        ledger: where calls are recorded; a new in-memory ledger by default.
        baseline_model: the all-frontier model savings are measured against.
        budgets: added to the ledger's budgets.
        embedder: text embedder for the cache and router; the offline
            all-MiniLM-L6-v2 (behind an LRU) is built on first use.
        token_counter: counts tokens for estimates.
        clock: "now" as an aware datetime (injectable for tests).

    Raises:
        ConfigurationError: the baseline model has no price in the catalog.
    """

    def __init__(
        self,
        *,
        catalog: PriceCatalog | None = None,
        ledger: CostLedger | None = None,
        baseline_model: str = DEFAULT_BASELINE_MODEL,
        budgets: Iterable[Budget] = (),
        embedder: Embedder | None = None,
        token_counter: TokenCounter | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.catalog = catalog or PriceCatalog.default()
        if baseline_model not in self.catalog:
            raise ConfigurationError(
                f"baseline_model {baseline_model!r} has no price in the catalog; pick a priced "
                f"frontier model (e.g. {DEFAULT_BASELINE_MODEL!r}) or add it with "
                "PriceCatalog.with_overrides"
            )
        self.baseline_model = baseline_model
        self._pricer = CallPricer(self.catalog, baseline_model)
        self.clock: Callable[[], datetime] = clock or utc_now
        self.ledger = ledger if ledger is not None else CostLedger(clock=self.clock)
        for b in budgets:
            self.ledger.add_budget(b)
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self.tokens = token_counter or default_counter()
        # Set by child(): the engine whose embedder this one shares.
        self._parent: CostEngine | None = None

    def child(self) -> CostEngine:
        """An engine for a block of calls inside this one (``track_costs``).

        The child has a fresh ledger, so its totals are the block's own, and
        shares everything else: the catalog, baseline model, embedder (built
        once, by whichever engine needs it first), token counter and clock.
        Every call the child records is recorded in this engine's ledger too
        (under the same call id: a handler of this engine that also sees the
        call counts it once), and this engine's budgets are checked before
        each of the child's calls and count its spend. So opening a block
        never gets around a process-wide budget, and this engine's totals
        still cover everything it was asked to watch.

        Budgets added to the child later apply to the block alone.
        """
        child = CostEngine(
            catalog=self.catalog,
            ledger=CostLedger(clock=self.clock, parent=self.ledger),
            baseline_model=self.baseline_model,
            embedder=self._embedder,
            token_counter=self.tokens,
            clock=self.clock,
        )
        child._parent = self
        return child

    @property
    def embedder(self) -> Embedder:
        """The shared embedder (built lazily: constructing an engine does no I/O)."""
        if self._embedder is None and self._parent is not None:
            # Not built yet when the child was made: build (or reuse) the parent's.
            return self._parent.embedder
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    self._embedder = CachingEmbedder(SentenceTransformerEmbedder())
        return self._embedder

    # -- pricing ------------------------------------------------------------
    def cost(self, model: str, usage: Usage, mode: CallMode = "sync") -> Decimal | None:
        """Cost of one call in USD, ``None`` if the model has no price."""
        return cost_of(self.catalog.get(model), usage, mode)

    def estimate(
        self,
        model: str,
        messages: Sequence[Message] = (),
        *,
        input_tokens: int | None = None,
        max_output_tokens: int = 0,
        tools: Sequence[Any] | None = None,
        input_tokens_approximate: bool = False,
        mode: CallMode = "sync",
    ) -> Decimal | None:
        """Upper-bound cost of a call before it is made (what a budget holds).

        Every prompt token is priced at the dearest input rate the model has
        (the provider may bill the prompt as cache writes), the output at
        ``max_output_tokens``. A token count that is not by the model's own
        tokenizer (Claude and Gemini are counted with ``cl100k_base``) is
        padded by :data:`~costopt_core.tokens.APPROXIMATE_COUNT_MARGIN` (see
        :meth:`~costopt_core.tokens.TokenCounter.may_undercount`).

        Args:
            model: the model the call goes to.
            messages: the prompt, counted when ``input_tokens`` is not given.
            input_tokens: the prompt's tokens, counted by the caller.
            max_output_tokens: the request's output cap (0: none).
            tools: tool schemas sent with the request (billed as input),
                counted as their JSON.
            input_tokens_approximate: whether ``input_tokens`` may be below the
                model's own count (then it is padded too; counts made here are
                padded when the counter may undercount the model).
            mode: the rates the call is billed at (``"batch"`` for a provider
                batch API; a model with no batch price is held at its sync price).

        ``None`` when the model has no price: not $0, so a budget check must
        not take it as one (see :meth:`check_unpriced`).
        """
        if input_tokens is None:
            count = self.tokens.count_messages(messages, model).tokens
            prompt = upper_bound_tokens(count, self.tokens.may_undercount(model))
        else:
            prompt = upper_bound_tokens(input_tokens, input_tokens_approximate)
        if tools:
            prompt += self.tool_tokens(tools, model)
        price = self.catalog.get(model, warn=False)
        return estimate_cost(price, prompt, max_output_tokens, mode, upper_bound=True)

    def tool_tokens(self, tools: Sequence[Any], model: str) -> int:
        """Tokens the JSON of ``tools`` takes (padded as :meth:`estimate` pads counts)."""
        text = json.dumps(list(tools), default=str, ensure_ascii=False)
        count = self.tokens.count(text, model)
        return upper_bound_tokens(count, self.tokens.may_undercount(model))

    # -- recording ----------------------------------------------------------
    def record_call(
        self,
        *,
        model: str,
        usage: Usage,
        tier: str | None = None,
        tenant: str | None = None,
        mode: CallMode = "sync",
        outcome: CallOutcome = "model",
        framework: str | None = None,
        latency_ms: float | None = None,
        removed_input_tokens: Mapping[str, int] | None = None,
        tags: Mapping[str, str] | None = None,
        call_id: str | None = None,
        estimated: bool = False,
    ) -> CallRecord:
        """Price a call, split its savings by lever, and add it to the ledger.

        A call made inside :func:`~costopt_core.overhead.overhead_of` (a
        summarizer's) is recorded as that lever's ``overhead``.
        """
        outcome, usage, charged_to = recorded_as(outcome, usage)
        priced = attribute_savings(
            self.catalog,
            model=model,
            usage=usage,
            baseline_model=self.baseline_model,
            mode=mode,
            outcome=outcome,
            removed_input_tokens=removed_input_tokens,
            charged_to=charged_to,
        )
        record = CallRecord(
            call_id=call_id or uuid.uuid4().hex,
            timestamp=self.clock(),
            model=model,
            usage=usage,
            cost_usd=priced.cost_usd,
            baseline_cost_usd=priced.baseline_cost_usd,
            savings_usd=priced.savings_usd,
            mode=mode,
            outcome=outcome,
            tier=tier,
            tenant=tenant,
            framework=framework,
            latency_ms=latency_ms,
            estimated=estimated,
            tags=dict(tags or {}),
        )
        self.ledger.append(record)
        return record

    def record_call_deferred(
        self,
        *,
        model: str,
        usage: Usage,
        call_id: str | uuid.UUID,
        tier: str | None = None,
        tenant: str | None = None,
        outcome: CallOutcome = "model",
        framework: str | None = None,
        latency_ms: float | None = None,
    ) -> PricedCall:
        """:meth:`record_call` for a sync call, returning its price; the record is built later.

        The framework handlers record every LLM call with this, inside the
        call: pricing happens now (the handler puts the cost on the answer),
        and the :class:`CallRecord` is built by the ledger's next read (see
        :meth:`CostLedger.append_call`), which holds the same record
        :meth:`record_call` would have built (the call id as ``str``).

        Args:
            model, usage, tier, tenant, outcome, framework, latency_ms: as for
                :meth:`record_call`.
            call_id: the framework's id of the call (a LangChain run id, a
                LlamaIndex span id); a second report of it is not counted.

        Returns:
            The call's price and its savings by lever.
        """
        pricer = self._pricer
        if pricer.catalog is not self.catalog or pricer.baseline_model != self.baseline_model:
            pricer = self._pricer = CallPricer(self.catalog, self.baseline_model)  # reassigned
        outcome, usage, charged_to = recorded_as(outcome, usage)
        priced = pricer.price(model, usage, outcome, charged_to)
        clock = self.clock
        self.ledger.append_call(
            time.time() if clock is utc_now else clock(),
            call_id,
            model,
            usage,
            priced,
            "sync",
            outcome,
            tier,
            tenant,
            framework,
            latency_ms,
        )
        return priced

    def record_removed_tokens(
        self,
        tokens: int,
        *,
        lever: Literal["compression", "memory"] = "compression",
        model: str | None = None,
        tenant: str | None = None,
        framework: str | None = None,
        tags: Mapping[str, str] | None = None,
        call_id: str | None = None,
    ) -> CallRecord | None:
        """Record input tokens that compression or memory kept out of a call.

        The saving is what those tokens would have cost on the baseline model
        (the same pricing as ``removed_input_tokens`` of :meth:`record_call`),
        so it adds to the baseline and to ``lever`` alike and the ledger still
        sums. The record has outcome ``removed``: it counts as no request, and
        its ``usage.input_tokens`` are the tokens kept out, never billed ones.

        Args:
            tokens: input tokens removed (nothing is recorded for ``<= 0``).
            lever: ``compression`` (retrieved context, prompt) or ``memory``.
            model: the model the context was meant for (a label only);
                the baseline model if omitted.
            tenant, framework, tags, call_id: as for :meth:`record_call`.

        Returns:
            The record, or ``None`` when nothing was removed.
        """
        if tokens <= 0:
            return None
        if lever not in ("compression", "memory"):
            raise ConfigurationError(f"lever must be 'compression' or 'memory', got {lever!r}")
        priced = attribute_savings(
            self.catalog,
            model=self.baseline_model,
            usage=_NOTHING_SENT,
            baseline_model=self.baseline_model,
            removed_input_tokens={lever: tokens},
        )
        record = CallRecord(
            call_id=call_id or uuid.uuid4().hex,
            timestamp=self.clock(),
            model=model or self.baseline_model,
            usage=Usage(input_tokens=tokens, output_tokens=0),
            cost_usd=priced.cost_usd,
            baseline_cost_usd=priced.baseline_cost_usd,
            savings_usd=priced.savings_usd,
            outcome="removed",
            tenant=tenant,
            framework=framework,
            tags=dict(tags or {}),
        )
        self.ledger.append(record)
        return record

    def check_budget(
        self,
        tenant: str | None = None,
        estimate_usd: Decimal | float | None = None,
        *,
        call_id: str | None = None,
        hold_ttl_s: float | None = None,
    ) -> list[BudgetDecision]:
        """See :meth:`CostLedger.check_budget`; raises ``BudgetExceededError`` on block.

        ``hold_ttl_s`` gives the call's hold a lifetime of its own (a provider
        batch runs for hours); ``None`` keeps the ledger's ``reservation_ttl_s``.
        A bad value raises ``ConfigurationError`` before any budget is read;
        an ``int`` or ``float`` estimate is converted to ``Decimal`` (NaN,
        infinite or negative ones are refused the same way).
        """
        return self.ledger.check_budget(
            tenant, estimate_usd, call_id=call_id, hold_ttl_s=hold_ttl_s
        )

    def check_unpriced(self, tenant: str | None, model: str) -> None:
        """Apply the budgets to a call of ``model``, which has no price (no estimate).

        A ``block`` or ``downshift`` budget covering ``tenant`` (here or on a
        parent engine) refuses the call: its cost could not be counted, so the
        budget could not keep its promise of no overspend. A ``warn`` budget
        lets it through, with one warning per model and budget, since the call
        will not count against it (its cost is recorded as unknown, never $0).
        Call it where :meth:`estimate` gave ``None`` instead of holding a $0
        estimate with :meth:`check_budget`.

        Raises:
            BudgetExceededError: a ``block`` or ``downshift`` budget covers the
                call; the message names the model and how to price it.
        """
        for budget in self.ledger.check_unpriced(tenant, model):
            self.catalog.warn_once(
                ("unpriced under budget", model, budget.scope, budget.period),
                f"model {model!r} has no price: its calls pass the warn budget for "
                f"{budget.scope} (${budget.limit_usd} a {budget.period}) without counting "
                "against it (their cost is unknown, not $0; costopt report counts them as "
                "unpriced). Add its price with PriceCatalog.with_overrides(...)",
                stacklevel=3,
            )

    def release_budget(self, tenant: str | None, call_id: str) -> None:
        """See :meth:`CostLedger.release_budget` (a call that failed spent nothing)."""
        self.ledger.release_budget(tenant, call_id)


_default: CostEngine | None = None
_default_lock = threading.Lock()


def default_engine() -> CostEngine:
    """The process-wide engine adapters use when none is passed."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = CostEngine()
    return _default


def set_default_engine(engine: CostEngine | None) -> None:
    """Replace (or, with ``None``, reset) the process-wide engine."""
    global _default
    with _default_lock:
        _default = engine


_current: ContextVar[CostEngine | None] = ContextVar("costopt_current_engine", default=None)


@contextmanager
def engine_scope(engine: CostEngine) -> Generator[CostEngine, None, None]:
    """Make ``engine`` the one components without an engine of their own record into.

    The ``track_costs()`` blocks of both adapter packages open one, so a
    retriever, summarizer, memory or batch job used inside the block books its
    savings in the block's ledger, next to the calls the block's handler prices.
    """
    token = _current.set(engine)
    try:
        yield engine
    finally:
        _current.reset(token)


def current_engine() -> CostEngine:
    """The engine of the innermost :func:`engine_scope`, else :func:`default_engine`."""
    engine = _current.get()
    return engine if engine is not None else default_engine()
