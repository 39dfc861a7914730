"""The price catalog: list prices per model, loaded from a versioned JSON file.

Prices are ``Decimal`` USD per million tokens, named with their unit. A model
name resolves through exact names, aliases, provider prefixes and dated
snapshots (``gpt-4o-2024-08-06`` -> ``gpt-4o``); a snapshot or alias with its
own entry (``gpt-4o-2024-05-13``) always gets that entry's price, never the
base model's. An unknown model has no
price: callers get ``None`` and one warning per model, never ``$0``.
A priced model's call can still cost ``None``: its provider reported no
usage, or it ran in a batch and the model has no batch price; each warns
once per model and reason too (see ``PriceCatalog.warn_once``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from costopt_core.errors import ConfigurationError

__all__ = [
    "LongContextPrice",
    "ModelPrice",
    "PriceCatalog",
    "UnknownCostWarning",
    "UnknownModelPriceWarning",
]

log = logging.getLogger("costopt.pricing")

Money = Decimal


class UnknownCostWarning(UserWarning):
    """A call is recorded with an unknown cost (``None``): no usage, no batch price, no price."""


class UnknownModelPriceWarning(UnknownCostWarning):
    """A call was made on a model the catalog has no price for."""


#: Warned-about keys a catalog remembers; past it the oldest may warn again
#: (an app making up model names must not grow memory without end).
_MAX_WARNED = 1024


class _Prices(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    usd_per_mtok_input: Money = Field(ge=0)
    usd_per_mtok_output: Money = Field(ge=0)
    usd_per_mtok_cache_read: Money | None = Field(default=None, ge=0)
    usd_per_mtok_cache_write_5m: Money | None = Field(default=None, ge=0)
    usd_per_mtok_cache_write_1h: Money | None = Field(default=None, ge=0)


class LongContextPrice(_Prices):
    """Prices that apply once the prompt exceeds ``above_input_tokens``."""

    above_input_tokens: int = Field(gt=0)
    usd_per_mtok_input: Money | None = Field(default=None, ge=0)  # type: ignore[assignment]
    usd_per_mtok_output: Money | None = Field(default=None, ge=0)  # type: ignore[assignment]


class ModelPrice(_Prices):
    """List prices of one model. Missing cache prices bill those tokens as input."""

    provider: str = "custom"
    usd_per_mtok_batch_input: Money | None = Field(default=None, ge=0)
    usd_per_mtok_batch_output: Money | None = Field(default=None, ge=0)
    long_context: LongContextPrice | None = None
    aliases: tuple[str, ...] = ()


_DATE_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-v\d+(:\d+)?|-\d{4}|-\d{3})$")
_PREFIX = re.compile(
    r"^(models/|openai/|anthropic/|google/|gemini/|together/|vertex_ai/|bedrock/"
    r"|anthropic\.|us\.|eu\.|apac\.|global\.)+"
)


def _strip(name: str) -> list[str]:
    """Candidate catalog keys for a raw model name, most specific first."""
    out = [name]
    lowered = name.lower()
    out.append(lowered)
    bare = _PREFIX.sub("", lowered)
    out.append(bare)
    undated = _DATE_SUFFIX.sub("", bare)
    while undated != bare:
        out.append(undated)
        bare, undated = undated, _DATE_SUFFIX.sub("", undated)
    if bare.endswith("-latest"):
        out.append(bare.removesuffix("-latest"))
    return out


class PriceCatalog:
    """Model prices with alias resolution and user overrides.

    Args:
        models: model name -> price.
        as_of: the date the list prices were read.
        schema_version: version of the JSON layout.

    Example:
        >>> catalog = PriceCatalog.default()
        >>> catalog.get("gpt-4o-2024-08-06").usd_per_mtok_input
        Decimal('2.50')
    """

    SCHEMA_VERSION = 1

    def __init__(
        self,
        models: Mapping[str, ModelPrice],
        *,
        as_of: date | None = None,
        schema_version: int = SCHEMA_VERSION,
    ) -> None:
        self._models: dict[str, ModelPrice] = dict(models)
        self.as_of = as_of
        self.schema_version = schema_version
        self._aliases: dict[str, str] = {}
        for name, price in self._models.items():
            for alias in price.aliases:
                self._aliases[alias.lower()] = name
        # A model's own entry beats another model's alias of the same name: an
        # explicit entry is the more specific price (e.g. a snapshot priced apart).
        for name in self._models:
            self._aliases[name.lower()] = name
        self._resolved: dict[str, str | None] = {}
        # Raw name -> its price, for names already resolved to one: get() runs
        # twice per recorded call (the model and the baseline).
        self._prices: dict[str, ModelPrice] = {}
        # (reason, model) already warned about, oldest first (bounded: _MAX_WARNED)
        self._warned: OrderedDict[Hashable, None] = OrderedDict()
        self._lock = threading.Lock()

    # -- construction -------------------------------------------------------
    @classmethod
    def default(cls) -> PriceCatalog:
        """The catalog shipped with costopt (``prices.json``)."""
        text = resources.files("costopt_core.pricing").joinpath("prices.json").read_text("utf-8")
        return cls.from_dict(json.loads(text), source="costopt_core/pricing/prices.json")

    @classmethod
    def from_file(cls, path: str | Path) -> PriceCatalog:
        """Load a catalog from a JSON file of the ``prices.json`` layout."""
        p = Path(path)
        try:
            data = json.loads(p.read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"price file {str(p)!r} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"price file {str(p)!r} is not valid JSON (UTF-8): {exc}"
            ) from None
        except OSError as exc:
            raise ConfigurationError(f"price file {str(p)!r} cannot be read: {exc}") from None
        return cls.from_dict(data, source=str(p))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> PriceCatalog:
        if not isinstance(data, Mapping) or not isinstance(data.get("models"), Mapping):
            raise ConfigurationError(
                f"price catalog {source} needs a top-level 'models' object mapping "
                "model name -> prices"
            )
        version = data.get("schema_version", cls.SCHEMA_VERSION)
        if version != cls.SCHEMA_VERSION:
            raise ConfigurationError(
                f"price catalog {source} has schema_version {version!r}; this costopt reads "
                f"version {cls.SCHEMA_VERSION}"
            )
        as_of = data.get("as_of")
        try:
            parsed_date = date.fromisoformat(as_of) if as_of else None
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"price catalog {source}: as_of must be an ISO date (YYYY-MM-DD), got {as_of!r}"
            ) from None
        return cls(
            {name: cls._parse_price(name, raw, source) for name, raw in data["models"].items()},
            as_of=parsed_date,
            schema_version=version,
        )

    @staticmethod
    def _parse_price(name: str, raw: Any, source: str) -> ModelPrice:
        if isinstance(raw, ModelPrice):
            return raw
        try:
            return ModelPrice.model_validate(
                {k: (str(v) if isinstance(v, float) else v) for k, v in dict(raw).items()}
            )
        except (ValidationError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"bad price for model {name!r} in {source}: {exc}") from None

    def with_overrides(
        self, overrides: Mapping[str, Mapping[str, Any] | ModelPrice]
    ) -> PriceCatalog:
        """A new catalog with models added or replaced (custom, local, negotiated prices).

        A partial override of a known model keeps the fields it does not name.
        """
        models = dict(self._models)
        for name, raw in overrides.items():
            if isinstance(raw, ModelPrice):
                models[name] = raw
                continue
            if not isinstance(raw, Mapping):
                raise ConfigurationError(
                    f"bad price override for model {name!r}: expected a mapping of price "
                    f"fields (e.g. {{'usd_per_mtok_input': 1.0}}) or a ModelPrice, got {raw!r}"
                )
            base_name = self.resolve(name)
            base = models[base_name].model_dump(exclude_none=True) if base_name else {}
            if base_name is not None and self._aliases.get(name.lower()) == base_name:
                key = base_name  # the model itself or one of its aliases: reprice it
            else:
                # A dated snapshot or new name gets its own entry; the base keeps its price.
                key = name
                base.pop("aliases", None)
            models[key] = self._parse_price(name, {**base, **dict(raw)}, "overrides")
        return PriceCatalog(models, as_of=self.as_of, schema_version=self.schema_version)

    # -- lookup -------------------------------------------------------------
    def models(self) -> list[str]:
        return sorted(self._models)

    def resolve(self, model: str) -> str | None:
        """The catalog name a raw model name refers to, or ``None``."""
        cached = self._resolved.get(model, "")
        if cached != "":
            return cached
        found: str | None = None
        for candidate in _strip(model):
            found = self._aliases.get(candidate)
            if found:
                break
        self._resolved[model] = found
        return found

    def get(self, model: str, *, warn: bool = True) -> ModelPrice | None:
        """Price of ``model``; ``None`` (and one warning per model) when unknown."""
        price = self._prices.get(model)
        if price is not None:
            return price
        name = self.resolve(model)
        if name is not None:
            price = self._prices[model] = self._models[name]
            return price
        if warn:
            self.warn_once(
                ("no price", model),
                f"no price for model {model!r}: its calls are recorded with cost None. "
                "Add it with PriceCatalog.with_overrides(...)",
                UnknownModelPriceWarning,
                stacklevel=4,
            )
        return None

    def warn_once(
        self,
        key: Hashable,
        message: str,
        category: type[Warning] = UnknownCostWarning,
        *,
        stacklevel: int = 3,
    ) -> None:
        """Log and warn ``message`` unless ``key`` was warned about already.

        Once per key (a model and a reason), not per call: a busy app would
        otherwise repeat it on every request. The keys kept are bounded.
        """
        with self._lock:
            if key in self._warned:
                return
            self._warned[key] = None
            if len(self._warned) > _MAX_WARNED:
                self._warned.popitem(last=False)
        log.warning(message)
        warnings.warn(message, category, stacklevel=stacklevel)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.resolve(model) is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "currency": "USD",
            "models": {
                n: p.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
                | {"provider": p.provider}
                for n, p in self._models.items()
            },
        }
