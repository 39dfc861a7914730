"""The current tenant, for code paths that receive no request metadata.

LangChain's ``BaseCache`` interface, for one, is handed only the prompt and
the model string, so the tenant reaches it through this context variable.
It follows threads started with ``contextvars.copy_context`` and asyncio
tasks, like every context variable.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current_tenant", "tenant_scope"]

_tenant: ContextVar[str | None] = ContextVar("costopt_tenant", default=None)


#: ``current_tenant()``: the tenant set by the innermost :func:`tenant_scope`, or
#: None. (The context variable's own ``get``: every recorded call reads it.)
current_tenant: Callable[[], str | None] = _tenant.get


@contextmanager
def tenant_scope(tenant: str | None) -> Generator[None, None, None]:
    """Run the block on behalf of ``tenant`` (cache namespaces, ledger records).

    Example:
        >>> with tenant_scope("acme"):
        ...     current_tenant()
        'acme'
    """
    token = _tenant.set(tenant)
    try:
        yield
    finally:
        _tenant.reset(token)
