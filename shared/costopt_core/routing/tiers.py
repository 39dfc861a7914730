"""Tiers: the ordered ladder of models a router chooses from, cheap to frontier.

A router never picks a model directly: it picks a *tier* (the cheapest one
whose answer is likely good enough), and the tier names the model(s) that
serve it. Keeping the ladder a validated value object means every other part
of the router (classifiers, calibration, the policy) can index tiers by
position and trust that position 0 is the cheapest and the last one the
frontier.

Prices come from the :class:`~costopt_core.pricing.PriceCatalog`; a tier may
override them with a flat ``usd_per_mtok`` (a local model's amortised
hardware cost, a negotiated rate).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from costopt_core.errors import ConfigurationError
from costopt_core.pricing import PriceCatalog, estimate_cost

__all__ = ["Tier", "Tiers", "repeated_models", "tier_members"]

_MTOK = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Tier:
    """One rung of the ladder.

    Attributes:
        name: unique name, shown in decisions and the ledger (``"cheap"``).
        models: the models that serve this tier; the first is the primary,
            the others are same-tier alternatives (fallbacks).
        usd_per_mtok: a flat price per million tokens (input and output alike)
            that replaces the catalog's; ``None`` uses the catalog.
        deployments: the models are distinct deployments (model objects an
            adapter holds), so a name may repeat: the same model behind a
            second API key or region, the usual fallback on rate limits.
            Without it a repeated name is a mistake in a spec (the same model
            would only be called again: that is ``retries_per_model``).

    Raises:
        ConfigurationError: an empty name or model name, no models, a model
            listed twice without ``deployments``, or a negative price.
    """

    name: str
    models: tuple[str, ...]
    usd_per_mtok: Decimal | None = None
    # Not compared: it says how the names were given, not which ladder this is.
    deployments: bool = field(default=False, kw_only=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigurationError(f"a tier needs a non-empty name, got {self.name!r}")
        if isinstance(self.models, str):
            # A bare string would iterate as characters: accept it as one model.
            object.__setattr__(self, "models", (self.models,))
        else:
            object.__setattr__(self, "models", tuple(self.models))
        if not self.models:
            raise ConfigurationError(f"tier {self.name!r} needs at least one model")
        for m in self.models:
            if not isinstance(m, str) or not m.strip():
                raise ConfigurationError(
                    f"tier {self.name!r}: model names must be non-empty strings, got {m!r}"
                )
        repeated = repeated_models(self.models)
        if repeated and not self.deployments:
            raise ConfigurationError(
                f"tier {self.name!r} lists a model twice: {self.models} (repeated: {repeated}); "
                "list each model once (RouterConfig(retries_per_model=...) retries a model), "
                "or, for a second deployment of the same model (another API key or region), "
                "give the router's tiers the model objects, or pass Tier(..., deployments=True)"
            )
        if self.usd_per_mtok is not None:
            price = Decimal(str(self.usd_per_mtok))
            if not price.is_finite() or price < 0:
                raise ConfigurationError(
                    f"tier {self.name!r}: usd_per_mtok must be a finite number >= 0, "
                    f"got {self.usd_per_mtok!r}"
                )
            object.__setattr__(self, "usd_per_mtok", price)

    @property
    def primary(self) -> str:
        """The model tried first for this tier."""
        return self.models[0]

    def expected_cost(
        self, catalog: PriceCatalog, *, input_tokens: int, output_tokens: int = 0
    ) -> Decimal | None:
        """USD cost of one call of this size on the primary model.

        ``None`` when the primary model has no price and the tier sets none
        (unknown is never priced as $0).
        """
        if self.usd_per_mtok is not None:
            return (input_tokens + output_tokens) * self.usd_per_mtok / _MTOK
        return estimate_cost(catalog.get(self.primary, warn=False), input_tokens, output_tokens)


class Tiers:
    """An ordered, validated sequence of :class:`Tier`, cheapest first.

    Args:
        tiers: two or more tiers, ordered cheap -> frontier.

    Raises:
        ConfigurationError: fewer than two tiers, duplicate tier names, or a
            tier without models.

    Example:
        >>> tiers = Tiers.from_mapping({"cheap": ["gpt-4o-mini"], "frontier": ["gpt-4o"]})
        >>> tiers.names, tiers.frontier.primary
        (('cheap', 'frontier'), 'gpt-4o')
    """

    __slots__ = ("_by_name", "_tiers")

    def __init__(self, tiers: Sequence[Tier]) -> None:
        items = tuple(tiers)
        if len(items) < 2:
            raise ConfigurationError(
                f"a router needs at least two tiers (cheap -> frontier), got {len(items)}"
            )
        for t in items:
            if not isinstance(t, Tier):
                raise ConfigurationError(f"expected Tier objects, got {type(t).__name__}")
        names = [t.name for t in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigurationError(f"tier names must be unique; repeated: {dupes}")
        self._tiers = items
        self._by_name = {t.name: i for i, t in enumerate(items)}

    @classmethod
    def from_mapping(cls, tiers: Mapping[str, str | Sequence[str]]) -> Tiers:
        """Tiers from ``{name: model or [models]}`` in insertion order (cheap first)."""
        return cls(
            [Tier(name, (m,) if isinstance(m, str) else tuple(m)) for name, m in tiers.items()]
        )

    # -- sequence protocol --------------------------------------------------
    def __len__(self) -> int:
        return len(self._tiers)

    def __iter__(self) -> Iterator[Tier]:
        return iter(self._tiers)

    @overload
    def __getitem__(self, key: int) -> Tier: ...
    @overload
    def __getitem__(self, key: str) -> Tier: ...
    def __getitem__(self, key: int | str) -> Tier:
        if isinstance(key, str):
            return self._tiers[self.index(key)]
        return self._tiers[key]

    def __repr__(self) -> str:
        inner = ", ".join(f"{t.name}={list(t.models)}" for t in self._tiers)
        return f"Tiers({inner})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tiers) and self._tiers == other._tiers

    def __hash__(self) -> int:
        return hash(self._tiers)

    # -- lookup -------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self._tiers)

    @property
    def cheapest(self) -> Tier:
        return self._tiers[0]

    @property
    def frontier(self) -> Tier:
        return self._tiers[-1]

    def index(self, name: str) -> int:
        """Position of the tier called ``name``.

        Raises:
            ConfigurationError: no tier has that name.
        """
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigurationError(
                f"no tier named {name!r}; tiers are {list(self.names)}"
            ) from None

    def tier_of_model(self, model: str) -> int | None:
        """Position of the first tier that lists ``model``, or ``None``."""
        for i, t in enumerate(self._tiers):
            if model in t.models:
                return i
        return None

    # -- prices -------------------------------------------------------------
    def expected_costs(
        self, catalog: PriceCatalog, *, input_tokens: int = 1000, output_tokens: int = 200
    ) -> tuple[Decimal | None, ...]:
        """USD cost per tier of one call of the given size (primary models)."""
        return tuple(
            t.expected_cost(catalog, input_tokens=input_tokens, output_tokens=output_tokens)
            for t in self._tiers
        )

    def relative_costs(
        self, catalog: PriceCatalog, *, input_tokens: int = 1000, output_tokens: int = 200
    ) -> npt.NDArray[np.float64]:
        """Per-tier cost as a fraction of the frontier tier's (frontier = 1.0).

        Calibration uses these when samples carry no costs of their own.

        Raises:
            ConfigurationError: a tier's price is unknown, or the frontier is free.
        """
        costs = self.expected_costs(catalog, input_tokens=input_tokens, output_tokens=output_tokens)
        missing = [t.name for t, c in zip(self._tiers, costs, strict=True) if c is None]
        if missing:
            raise ConfigurationError(
                f"no price for tier(s) {missing}: add the model with "
                "PriceCatalog.with_overrides(...) or set Tier(usd_per_mtok=...)"
            )
        arr = np.array([float(c) for c in costs if c is not None], dtype=np.float64)
        if arr[-1] <= 0:
            raise ConfigurationError("the frontier tier is free: relative costs are undefined")
        out: npt.NDArray[np.float64] = arr / arr[-1]
        return out

    def is_cost_ordered(
        self, catalog: PriceCatalog, *, input_tokens: int = 1000, output_tokens: int = 200
    ) -> bool:
        """True when every tier costs at least as much as the one below it.

        Not enforced (a misordered ladder still routes), but a ladder whose
        "cheap" tier is dearer than the next one saves nothing; callers may
        warn on ``False``. Unknown prices count as ordered.
        """
        costs = self.expected_costs(catalog, input_tokens=input_tokens, output_tokens=output_tokens)
        known = [c for c in costs if c is not None]
        return all(a <= b for a, b in itertools.pairwise(known))


def repeated_models(models: Sequence[str]) -> list[str]:
    """The model names listed more than once in ``models``, in first-seen order."""
    seen: set[str] = set()
    out: list[str] = []
    for m in models:
        if m in seen and m not in out:
            out.append(m)
        seen.add(m)
    return out


def tier_members(
    tiers: Mapping[str, Any], name_of: Callable[[Any], str], *, owner: str
) -> tuple[list[list[Any]], Tiers]:
    """An adapter's tiers of model objects as lists, and the engine's :class:`Tiers` of them.

    Args:
        tiers: tier name -> a model object or a list of them, cheap to frontier.
        name_of: a model object's model name (priced from the catalog).
        owner: the adapter class, named in errors.

    A tier may hold two objects of the same model name (a second API key or
    region): they are distinct deployments, stepped through by position.

    Raises:
        ConfigurationError: fewer than two tiers, a tier without models, or
            one model object listed twice in a tier.
    """
    if len(tiers) < 2:
        raise ConfigurationError(f"{owner} needs at least two tiers, got {list(tiers)}")
    members = [list(v) if isinstance(v, list) else [v] for v in tiers.values()]
    for name, models in zip(tiers, members, strict=True):
        if not models:
            raise ConfigurationError(
                f"{owner}'s tier {name!r} has no models: give every tier at least one"
            )
        # Two objects of one model name are two deployments; one object listed
        # twice is the same deployment called again, which is a retry.
        twice = [m for i, m in enumerate(models) if any(m is o for o in models[:i])]
        if twice:
            raise ConfigurationError(
                f"{owner}'s tier {name!r} lists the same model object twice "
                f"({name_of(twice[0])!r}): list it once and set "
                "RouterConfig(retries_per_model=...) to retry it, or give a second "
                "deployment (another API key or region) as a model object of its own"
            )
    ladder = Tiers(
        [
            Tier(str(name), tuple(name_of(m) for m in models), deployments=True)
            for name, models in zip(tiers, members, strict=True)
        ]
    )
    return members, ladder
