"""Local stand-ins for provider HTTP APIs, driven for real by the official SDKs.

Each fake is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) in a
daemon thread, holding all its state in the server object: a client process
can die and another collect later. ``FakeBatchServer`` carries what both batch
fakes share: the HTTP plumbing, the deterministic "model" that answers each
request, and the scripted behaviours tests ask for (failures per request id or
model, batches held in progress for N polls, expiry with requests unprocessed,
cancellation part-way).

The model: the reply to a request is ``"<model> answers: <last user text>"``;
tokens are whitespace-separated words (4 more per message, 3 for the reply's
priming); a system prompt of at least 8 words is a cacheable prefix, written
to the cache by the first request of a batch that has it and read by the later
ones. :meth:`FakeBatchServer.expected` gives what each request should come back
as, in the engine's ``Usage`` terms, computed independently of the providers'
translation code.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from costopt_core.batch.provider import BatchRequest
from costopt_core.types import Usage

__all__ = [
    "FailureKind",
    "FakeBatchServer",
    "Reply",
    "Response",
    "Turns",
    "count_words",
    "reply_for",
]

FailureKind = Literal["rate_limit", "server", "invalid"]
#: The smallest system prompt (in words) the fake treats as a cacheable prefix.
CACHEABLE_WORDS = 8


def count_words(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class Turns:
    """A request as the fake model reads it, whichever wire format it came in."""

    model: str
    system: str | None
    texts: tuple[str, ...]  # the text of every non-system message
    last_user: str


@dataclass(frozen=True)
class Reply:
    """What the fake model answers, with token counts by kind."""

    text: str
    prompt_tokens: int
    output_tokens: int
    cached_prefix_tokens: int  # the system prefix, when it is cacheable


def reply_for(turns: Turns) -> Reply:
    """The fake model's deterministic answer to ``turns``."""
    text = f"{turns.model} answers: {turns.last_user}"
    prompt = 3 + sum(count_words(t) + 4 for t in turns.texts)
    prefix = 0
    if turns.system:
        prompt += count_words(turns.system) + 4
        if count_words(turns.system) >= CACHEABLE_WORDS:
            prefix = count_words(turns.system) + 4
    return Reply(text, prompt, count_words(text), prefix)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, data: Any) -> Response:
        return cls(status, json.dumps(data).encode("utf-8"))


@dataclass
class Script:
    """What the next batches should go through (set by tests, read by the server)."""

    fail_ids: dict[str, FailureKind] = field(default_factory=dict)
    fail_models: dict[str, FailureKind] = field(default_factory=dict)
    hold_polls: int = 0
    expire_after: int | None = None
    cancel_after: int = 0
    #: OpenAI only: leave requests that never ran out of the error file.
    omit_unrun: bool = False


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every response.
    disable_nagle_algorithm = True

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake = self.server.fake
        try:
            path, _, query = self.path.partition("?")
            with fake.lock:  # the query is the fake's state for this one call
                fake.query = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
                response = fake.handle(method, path, headers, body)
        except Exception as exc:  # a bug in the fake: tell the client, keep serving
            response = Response.json(500, fake.error_body(500, f"fake server bug: {exc!r}"))
        with fake.lock:
            fake.log.append((method, self.path, response.status))
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeBatchServer


class FakeBatchServer:
    """Base of the batch API fakes: lifecycle, scripting and the fake model."""

    #: behaviours the batch contract may script (see ``tests/contract/batch_contract.py``).
    supports = frozenset({"expected", "fail", "hold", "expire", "cancel_after"})
    api_key = "test-key"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        #: the query string parameters of the request being handled.
        self.query: dict[str, str] = {}
        self.script = Script()
        self.log: list[tuple[str, str, int]] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> FakeBatchServer:
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def new_id(self, prefix: str) -> str:
        with self.lock:
            self._counter += 1
            return f"{prefix}{self._counter:06d}"

    # -- scripting (the contract's control API) -----------------------------------------

    def fail(self, request_id: str, kind: FailureKind = "invalid") -> None:
        """Make the request with ``request_id`` fail with ``kind`` in later batches."""
        self.script.fail_ids[request_id] = kind

    def fail_model(self, model: str, kind: FailureKind = "invalid") -> None:
        """Make every request for ``model`` fail with ``kind``."""
        self.script.fail_models[model] = kind

    def hold(self, polls: int) -> None:
        """Keep the next batches in progress for ``polls`` more status reads."""
        self.script.hold_polls = polls

    def expire_after(self, processed: int) -> None:
        """Let the next batches expire once their first ``processed`` requests ran."""
        self.script.expire_after = processed

    def cancel_after(self, processed: int) -> None:
        """On cancellation, the first ``processed`` requests have run; the rest never do."""
        self.script.cancel_after = processed

    def failure_for(self, custom_id: str, model: str) -> FailureKind | None:
        return self.script.fail_ids.get(custom_id) or self.script.fail_models.get(model)

    # -- the fake model, as the tests see it --------------------------------------------

    @staticmethod
    def turns_of(request: BatchRequest) -> Turns:
        system = [m.content for m in request.messages if m.role == "system"]
        others = [m for m in request.messages if m.role != "system"]
        users = [m.content for m in others if m.role == "user"]
        return Turns(
            model=request.model,
            system="\n\n".join(system) if system else None,
            texts=tuple(m.content for m in others),
            last_user=users[-1] if users else "",
        )

    def expected(self, requests: Sequence[BatchRequest]) -> dict[str, tuple[str, Usage]]:
        """Text and usage each of ``requests`` should succeed with, submitted as one batch."""
        seen: set[str] = set()
        out: dict[str, tuple[str, Usage]] = {}
        for request in requests:
            turns = self.turns_of(request)
            reply = reply_for(turns)
            first = bool(reply.cached_prefix_tokens) and turns.system not in seen
            if turns.system:
                seen.add(turns.system)
            out[request.id] = (reply.text, self.expected_usage(reply, first_write=first))
        return out

    def expected_usage(self, reply: Reply, *, first_write: bool) -> Usage:
        raise NotImplementedError

    # -- HTTP ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request; the query string's parameters are in :attr:`query`."""
        raise NotImplementedError

    def page(self, items: list[Any], cursor: str, limit: int) -> tuple[list[Any], bool]:
        """One page of ``items`` (newest first) after the item whose ``id`` is ``cursor``."""
        ids = [item.id for item in items]
        start = ids.index(cursor) + 1 if cursor in ids else 0
        chunk = items[start : start + limit]
        return chunk, start + limit < len(items)

    def error_body(self, status: int, message: str, kind: str | None = None) -> Any:
        raise NotImplementedError
