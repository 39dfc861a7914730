"""``CacheConfig``: every knob of the semantic cache, validated at the boundary."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from costopt_core.cache.defaults import (
    DEFAULT_GUARDS,
    DEFAULT_PAIR_GATE,
    DEFAULT_PAIR_SKIP,
    DEFAULT_PAIR_THRESHOLD,
    DEFAULT_SIMILARITY_THRESHOLD,
)
from costopt_core.cache.guards import GuardConfig
from costopt_core.errors import config_error

__all__ = ["CacheConfig"]


class CacheConfig(BaseModel):
    """How the cache decides what to serve and what to keep.

    The defaults favour precision: a wrong cached answer costs more than the
    call it saved.
    """

    # Seconds are finite: an infinite wait or TTL overflows the timers that use it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(type(self).__name__, exc) from None

    similarity_threshold: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description=(
            "Cosine similarity a semantic hit needs (guards and the pair check apply on "
            f"top). None: the shipped default, {DEFAULT_SIMILARITY_THRESHOLD} alone or "
            f"{DEFAULT_PAIR_GATE} in front of the pair check."
        ),
    )
    pair_check: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Score each candidate with the learned pair model (both prompts read "
            "together) and serve it only if pair_threshold is reached. 'auto': on with "
            "the default embedder, whose similarities the check was calibrated with; "
            "with your own embedder, calibrate a threshold and turn it 'on' if wanted."
        ),
    )
    pair_threshold: float = Field(
        DEFAULT_PAIR_THRESHOLD,
        gt=0.0,
        le=1.0,
        description=(
            "Lowest pair_probability (pair model, similarity, word overlap) that serves a hit; 1.0 "
            "serves only candidates at or above pair_skip_similarity."
        ),
    )
    pair_skip_similarity: float | None = Field(
        DEFAULT_PAIR_SKIP,
        gt=0.0,
        le=1.0,
        description=(
            "Similarity at or above which a candidate the guards pass is served without "
            "the pair check (near-identical prompts: the check adds hits below this, and "
            "costs nothing above it). None: every candidate goes through the check."
        ),
    )
    guards: GuardConfig = Field(default_factory=lambda: DEFAULT_GUARDS)
    semantic: bool = Field(True, description="False: exact matches only.")
    context_turns: int = Field(
        2, ge=0, le=20, description="Earlier turns embedded with the last user turn."
    )
    ttl_s: float | None = Field(None, gt=0, description="Time to live; None keeps entries.")
    top_k: int = Field(4, ge=1, le=64, description="Semantic candidates checked per lookup.")
    cache_tool_calls: bool = Field(True, description="Store answers that call tools.")
    cache_truncated: bool = Field(
        False, description="Store answers cut by max_tokens (finish_reason 'length')."
    )
    dedupe_inflight: bool = Field(
        True, description="Concurrent identical misses make one model call."
    )
    inflight_wait_s: float = Field(120.0, gt=0, description="How long followers wait.")
    breaker_failures: int = Field(5, ge=1, description="Errors before the breaker opens.")
    breaker_reset_s: float = Field(30.0, gt=0, description="Seconds before a trial call.")
    signing_key: SecretStr | None = Field(
        None,
        description=(
            "HMAC-SHA256 key: entries are signed when stored and served only when the "
            "signature checks out (for backends others can write to, such as a shared "
            "Redis). Entries stored unsigned or under another key become misses. At least "
            "16 characters (the cache checks; pydantic would echo the key in its error)."
        ),
    )
    pad_hits_to_s: float | None = Field(
        None,
        gt=0,
        le=60,
        description=(
            "Make a hit take at least this long (seconds), so response time tells an "
            "observer less about whether someone else asked the same question. Set it "
            "near the model's typical latency; it gives back the latency a hit saves "
            "(not the cost)."
        ),
    )
