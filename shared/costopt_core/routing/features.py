"""Cheap, pure request features: what a router can know before any model call.

The heuristic classifier turns these into a complexity score, and the learned
classifier can append them to the prompt embedding. Everything here is a
function of the request alone (messages plus two flags) and uses only
precompiled regular expressions and the shared token counter, so a request
costs tens of microseconds to about a millisecond, even when long.

The module also decides *which text* a router embeds (:func:`routing_text`):
the last user turn, cut to its final paragraphs. Embedders truncate from the
end (all-MiniLM-L6-v2 keeps the first 256 word pieces), so a few-shot prompt
embedded whole is mostly its fixed examples and every prompt looks alike;
the question being asked sits at the end.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from costopt_core.errors import ConfigurationError
from costopt_core.text import normalize_text
from costopt_core.tokens import TokenCounter, default_counter
from costopt_core.types import ChatRequest, Message

__all__ = [
    "FEATURE_NAMES",
    "QuestionType",
    "RequestFeatures",
    "RouteInput",
    "as_messages",
    "extract_features",
    "feature_matrix",
    "requested_response_schema",
    "routing_text",
    "wants_structured_output",
]

#: What a router accepts: a bare prompt, a message list, or a whole request.
RouteInput = str | ChatRequest | Sequence[Message]

QuestionType = Literal[
    "choice", "code", "math", "why", "how", "creative", "transform", "yes_no", "factual", "other"
]
_QUESTION_TYPES: tuple[QuestionType, ...] = (
    "choice",
    "code",
    "math",
    "why",
    "how",
    "creative",
    "transform",
    "yes_no",
    "factual",
    "other",
)

# Parameters that ask for structured output, across providers and frameworks.
_STRUCTURED_PARAMS = ("response_format", "structured_output", "json_schema", "format", "schema")

_I = re.IGNORECASE | re.MULTILINE
_CODE_FENCE = re.compile(r"```")
_CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import |#include|public |private |fn |func |"
    r"const |let |var |function |return |SELECT |INSERT |CREATE TABLE|for \(|while \(|if \()"
    r"|[;{}]\s*$|=>|->\s*\w|\w+\([^()\n]*\)\s*[;{:]",
    re.MULTILINE,
)
_MATH_SYMBOLS = re.compile(
    r"\\(frac|sum|int|sqrt|lim|prod|partial|cdot|times|leq|geq|infty)"
    r"|\d\s*[-+*/^=<>]\s*\d|[√∑∫∞≤≥≠±π]|\b[xyz]\^?\d?\s*[-+=]\s*\d",
    re.IGNORECASE,
)
# A $...$ span counts once, on its own: inside _MATH_SYMBOLS it would consume
# the LaTeX commands and operators it holds, which then went uncounted.
_TEX_SPAN = re.compile(r"\$[^$\n]+\$")
# Digits joined by hyphens, dots or slashes that are dates, phone numbers or
# codes, not arithmetic (2024-05-01, 05/01/2024, 555-123-4567, (555) 123-4567,
# 10-11am): blanked before the operator pattern reads "5-0" as a subtraction. A
# bare "555-1234" stays: it reads as 125-1000 does, and that one is arithmetic.
_NOT_MATH = re.compile(
    r"\b\d{4}([-/.])\d{1,2}\1\d{1,2}\b"
    r"|\b\d{1,2}([-/.])\d{1,2}\2\d{2,4}\b"
    r"|(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[-.])\d{3}[-.]\d{4}\b"
    r"|\b\d{1,2}(?::\d{2})?-\d{1,2}(?::\d{2})?\s?[ap]\.?m\b"
)
# Every word cue in one alternation, matched on lower-cased text: one pass over
# the prompt instead of one per cue family (several times faster on long prompts).
_CUES = re.compile(
    r"\b(?:"
    r"(?P<both>prove|proof)"
    r"|(?P<code>python|javascript|typescript|java|rust|golang|c\+\+|sql|regex|function|bug|"
    r"compile|stack ?trace|exception|refactor|unit tests?|api|debug|script)"
    r"|(?P<math>solve|equation|integral|derivative|probability|theorem|calculate|"
    r"compute|polynomial|matrix|eigen\w*|modulo|prime|factori[sz]e|sum of|how many|"
    r"expected value|variance|logarithm|geometry|algebra|percent(?:age)?)"
    r"|(?P<reasoning>step[- ]by[- ]step|explain why|reason(?:ing)? (?:about|through)|derive|"
    r"justify|analy[sz]e|compare|contrast|trade-?offs?|evaluate|critique|implications?|"
    r"pros and cons|what would happen|under what conditions|in what ways|infer|deduce|"
    r"hypothes[ie]s|counter-?argument|think carefully|plan)"
    r"|(?P<steps>then|after that|afterwards|finally|next,|first,|second,|and also|additionally)"
    r"|(?P<constraints>must|should not|do not|don't|at least|at most|no more than|exactly|"
    r"only|without|format|json|yaml|table|bullet|words|characters|limit)"
    r")\b"
)
_LIST_ITEM = re.compile(r"^\s*(\d+[.)]|[-*•]\s)", re.MULTILINE)
_CHOICE = re.compile(r"^\s*\(?[A-Ha-h][.)]\s+\S", re.MULTILINE)
_CREATIVE = re.compile(
    r"\b(write|compose|draft|story|poem|essay|lyrics|slogan|imagine|creative|brainstorm)\b", _I
)
_TRANSFORM = re.compile(
    r"\b(translate|summari[sz]e|rewrite|rephrase|paraphrase|classify|extract|convert|"
    r"correct the grammar|proofread|list|tl;?dr)\b",
    _I,
)
_WH_FACT = re.compile(r"^\s*(what|who|when|where|which|name|define)\b", _I)
_HOW = re.compile(r"\bhow (do|does|can|could|should|would|to)\b", _I)
_WHY = re.compile(r"\bwhy\b", _I)
_YES_NO = re.compile(
    r"^\s*(is|are|was|were|do|does|did|can|could|should|would|will|has|have)\b[^?\n]*\?", _I
)
# Long prompts are scanned in a head and a tail window (instructions tend to
# open a prompt, the question to close it), and their tokens are counted on a
# prefix and extrapolated, so a 100k-token prompt costs what a 2k one does.
_SCAN_CHARS = 3000
_COUNT_CHARS = 8000
_PARA = re.compile(r"\n\s*\n")


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """What a request looks like, as plain numbers and flags.

    Attributes:
        tokens: prompt tokens of the whole request, chat framing included
            (an estimate: what routing needs is the request's size, not the bill;
            prompts beyond 8,000 characters are counted on a prefix and scaled).
        last_user_tokens: tokens of the last user turn.
        turns: user turns in the conversation (conversation depth).
        messages: messages other than system ones.
        has_system: a system prompt is present.
        code: code markers (fences, code-like lines, language/tool words) in the user text.
        math: math markers (symbols, LaTeX, math vocabulary).
        reasoning: reasoning cues ("step by step", "prove", "compare", ...).
        steps: multi-step cues (numbered/bulleted items, "then", "finally").
        constraints: output constraints ("must", "at most", "JSON", ...).
        questions: question marks in the last user turn.
        question_type: the dominant kind of ask (see :data:`QuestionType`).
        multiple_choice: the last turn offers lettered options.
        tools: tools are bound to the request.
        structured_output: a structured (JSON/schema) answer is requested.
    """

    tokens: int
    last_user_tokens: int
    turns: int
    messages: int
    has_system: bool
    code: int
    math: int
    reasoning: int
    steps: int
    constraints: int
    questions: int
    question_type: QuestionType
    multiple_choice: bool
    tools: bool
    structured_output: bool

    def as_array(self) -> npt.NDArray[np.float64]:
        """Numeric vector in :data:`FEATURE_NAMES` order (counts log-scaled, type one-hot)."""
        return np.array(_vector(self), dtype=np.float64)


def _vector(f: RequestFeatures) -> list[float]:
    # log1p keeps one 8k-token prompt from dwarfing every other feature.
    out = [
        math.log1p(f.tokens),
        math.log1p(f.last_user_tokens),
        math.log1p(f.turns),
        math.log1p(f.messages),
        float(f.has_system),
        math.log1p(f.code),
        math.log1p(f.math),
        math.log1p(f.reasoning),
        math.log1p(f.steps),
        math.log1p(f.constraints),
        math.log1p(f.questions),
        float(f.multiple_choice),
        float(f.tools),
        float(f.structured_output),
    ]
    out.extend(1.0 if f.question_type == q else 0.0 for q in _QUESTION_TYPES)
    return out


#: Names of the entries of :meth:`RequestFeatures.as_array`.
FEATURE_NAMES: tuple[str, ...] = (
    "log_tokens",
    "log_last_user_tokens",
    "log_turns",
    "log_messages",
    "has_system",
    "log_code",
    "log_math",
    "log_reasoning",
    "log_steps",
    "log_constraints",
    "log_questions",
    "multiple_choice",
    "tools",
    "structured_output",
    *(f"type_{q}" for q in _QUESTION_TYPES),
)


def as_messages(item: RouteInput) -> tuple[Message, ...]:
    """The messages of any accepted input (a bare string is one user message).

    Raises:
        ConfigurationError: the input is none of str, ChatRequest, Message sequence.
    """
    if isinstance(item, str):
        return (Message(role="user", content=item),)
    if isinstance(item, ChatRequest):
        return item.messages
    msgs = tuple(item)
    for m in msgs:
        if not isinstance(m, Message):
            raise ConfigurationError(
                "a route input is a prompt string, a ChatRequest or a sequence of Message; "
                f"got an item of type {type(m).__name__}"
            )
    return msgs


def _asks_structure(value: Any) -> bool:
    """One structured-output parameter's value asks for structure (not plain text)."""
    if value is None or value is False:
        return False
    if isinstance(value, str):
        return value.strip().lower() not in ("", "text")
    if isinstance(value, Mapping):
        # OpenAI's explicit plain text, {"type": "text"}, asks for no structure;
        # {"type": "json_object"} / {"type": "json_schema", ...} do.
        kind = value.get("type")
        if isinstance(kind, str) and kind.strip().lower() == "text":
            return False
        return bool(value)
    return True  # a schema class, a pydantic model, True


def wants_structured_output(params: Mapping[str, Any]) -> bool:
    """True if a request's parameters ask for structured (JSON) output.

    Reads ``response_format``, ``structured_output``, ``json_schema``,
    ``format`` and ``schema``. Unset, empty, ``False``, ``"text"`` and
    OpenAI's ``{"type": "text"}`` ask for plain text; ``"json"``,
    ``{"type": "json_object"}``, ``{"type": "json_schema", ...}``, a schema
    mapping or a schema class ask for structure. Adapters call this on a
    call's keyword arguments so their routers and the engine's features agree.

    Args:
        params: the request's parameters (a call's keyword arguments).

    Example:
        >>> wants_structured_output({"response_format": {"type": "text"}})
        False
        >>> wants_structured_output({"response_format": {"type": "json_object"}})
        True
    """
    return any(_asks_structure(params.get(k)) for k in _STRUCTURED_PARAMS)


#: Where a request names the JSON schema of a structured text answer.
_RESPONSE_SCHEMA_KEYS = ("response_format", "format", "json_schema")


def _schema_of(value: Any, convert: Callable[[type], Any] | None) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        if value.get("type") == "json_schema":
            spec = value.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, Mapping) else None
            return schema if isinstance(schema, Mapping) else None
        return value if ("properties" in value or "$schema" in value) else None
    if isinstance(value, type):
        # A framework's own conversion first (LangChain's reads TypedDicts too).
        ways: list[Callable[[], Any]] = []
        if convert is not None:
            ways.append(lambda: convert(value))
        dump = getattr(value, "model_json_schema", None)
        if callable(dump):
            ways.append(dump)
        for to_schema in ways:
            try:
                schema = to_schema()
            except Exception:  # not a schema class: no schema to check against
                continue
            if isinstance(schema, Mapping):
                return schema
    return None


def requested_response_schema(
    *sources: Mapping[str, Any], convert: Callable[[type], Any] | None = None
) -> Mapping[str, Any] | None:
    """The JSON schema a request asks its text answer to match, or None.

    Read from the first of ``response_format``, ``format`` and
    ``json_schema`` set in the first source that sets one: OpenAI's
    ``{"type": "json_schema", "json_schema": {"schema": ...}}``, a JSON schema
    itself (Ollama's ``format``), or a pydantic class. ``None`` for plain JSON
    mode, text, or anything else: only "is it JSON" is checked then. Both
    routers read a request's schema here, so they escalate the same answers.

    Args:
        sources: the request's parameters (a call's keyword arguments), in
            the order they take precedence.
        convert: a framework's class-to-schema conversion (LangChain's
            ``convert_to_json_schema`` reads TypedDicts too); a pydantic
            class is converted without one.
    """
    for source in sources:
        for key in _RESPONSE_SCHEMA_KEYS:
            if key in source:
                schema = _schema_of(source[key], convert)
                if schema is not None:
                    return schema
    return None


def _last_user(messages: Sequence[Message]) -> str:
    for m in reversed(messages):
        if m.role == "user":
            return m.content
    # No user turn (a completion-style prompt): the last message is the ask.
    return messages[-1].content if messages else ""


def routing_text(item: RouteInput, *, max_chars: int = 1000) -> str:
    """The text a router embeds: the end of the last user turn, whitespace-normalised.

    Whole trailing paragraphs are kept while they fit in ``max_chars``; the
    final paragraph is always kept whole (the embedder truncates it if it is
    longer). Whitespace is normalised as in the semantic cache's text
    (``costopt_core.text.normalize_text``), so a single-turn prompt embeds to
    the same string in both and the engine's embedder LRU computes its vector
    once. (The default embedder's tokenizer splits on whitespace anyway.)

    Args:
        item: the request.
        max_chars: soft budget (~250 tokens of English, what MiniLM reads).
    """
    text = _last_user(as_messages(item))
    if len(text) > max_chars:
        paras = [p for p in _PARA.split(text) if p.strip()]
        if paras:
            out = paras[-1]
            for p in reversed(paras[:-1]):
                if len(out) + len(p) + 2 > max_chars:
                    break
                out = f"{p}\n\n{out}"
            text = out
    return normalize_text(text)


def _window(text: str) -> str:
    if len(text) <= 2 * _SCAN_CHARS:
        return text
    return f"{text[:_SCAN_CHARS]}\n{text[-_SCAN_CHARS:]}"


def _count(counter: TokenCounter, text: str, model: str | None) -> int:
    if len(text) <= _COUNT_CHARS:
        return counter.count(text, model)
    head = counter.count(text[:_COUNT_CHARS], model)
    return round(head * len(text) / _COUNT_CHARS)


# Chat framing per message and for the reply, as OpenAI counts it (tokens.py).
_PER_MESSAGE = 4
_REPLY = 3


def _question_type(text: str, code: int, math_: int, choice: bool) -> QuestionType:
    # Ordered by how strongly each kind predicts difficulty: an explicit
    # choice list or code beats the opening word of the sentence.
    if choice:
        return "choice"
    if code >= 2:
        return "code"
    if math_ >= 2:
        return "math"
    head = text[:400]
    if _WHY.search(head):
        return "why"
    if _HOW.search(head):
        return "how"
    if _CREATIVE.search(head):
        return "creative"
    if _TRANSFORM.search(head):
        return "transform"
    if _YES_NO.search(head):
        return "yes_no"
    if _WH_FACT.search(head):
        return "factual"
    return "other"


def extract_features(
    item: RouteInput,
    *,
    tools: bool | None = None,
    structured_output: bool | None = None,
    counter: TokenCounter | None = None,
    model: str | None = None,
) -> RequestFeatures:
    """Features of one request.

    Args:
        item: the request (prompt string, messages, or ``ChatRequest``).
        tools: tools are bound; read from the ``ChatRequest`` when ``None``.
        structured_output: a structured answer is requested; read from the
            request's params (``response_format`` and the like) when ``None``.
        counter: token counter; the process-wide one by default.
        model: model whose tokenizer counts the tokens (cl100k when ``None``).

    Returns:
        The features; a pure function of the arguments.
    """
    messages = as_messages(item)
    if tools is None:
        tools = isinstance(item, ChatRequest) and bool(item.tools or item.params.get("tools"))
    if structured_output is None:
        structured_output = isinstance(item, ChatRequest) and wants_structured_output(item.params)
    counter = counter or default_counter()
    last = _last_user(messages)
    # Count every message once; the last user turn's count is reused.
    last_tokens = _count(counter, last, model)
    tokens = _REPLY
    seen_last = False
    for m in reversed(messages):
        if not seen_last and m.content is last:
            tokens += _PER_MESSAGE + last_tokens
            seen_last = True
        else:
            tokens += _PER_MESSAGE + _count(counter, m.content, model)
    user_text = _window("\n".join(m.content for m in messages if m.role == "user") or last)
    scan = _window(last)

    cues = {"code": 0, "math": 0, "reasoning": 0, "steps": 0, "constraints": 0}
    for match in _CUES.finditer(scan.lower()):
        group = match.lastgroup
        if group == "both":
            cues["math"] += 1
            cues["reasoning"] += 1
        elif group is not None:
            cues[group] += 1
    fences = len(_CODE_FENCE.findall(user_text)) // 2
    code = 3 * fences + len(_CODE_LINE.findall(user_text)) + cues["code"]
    math_ = (
        len(_MATH_SYMBOLS.findall(_NOT_MATH.sub(" ", scan)))
        + len(_TEX_SPAN.findall(scan))
        + cues["math"]
    )
    choice = len(_CHOICE.findall(scan)) >= 2
    return RequestFeatures(
        tokens=tokens,
        last_user_tokens=last_tokens,
        turns=sum(1 for m in messages if m.role == "user"),
        messages=sum(1 for m in messages if m.role != "system"),
        has_system=any(m.role == "system" for m in messages),
        code=code,
        math=math_,
        reasoning=cues["reasoning"],
        steps=cues["steps"] + len(_LIST_ITEM.findall(scan)),
        constraints=cues["constraints"],
        questions=last.count("?"),
        question_type=_question_type(scan, code, math_, choice),
        multiple_choice=choice,
        tools=bool(tools),
        structured_output=bool(structured_output),
    )


def feature_matrix(
    items: Sequence[RouteInput] | Sequence[RequestFeatures],
) -> npt.NDArray[np.float64]:
    """Rows of :meth:`RequestFeatures.as_array` for many requests, shape ``(n, n_features)``."""
    rows = [
        _vector(x) if isinstance(x, RequestFeatures) else _vector(extract_features(x))
        for x in items
    ]
    if not rows:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float64)
    return np.array(rows, dtype=np.float64)


# Keep the names and the vector in step (a mismatch would silently shift columns).
assert len(FEATURE_NAMES) == len(fields(RequestFeatures)) - 1 + len(_QUESTION_TYPES)
