"""HMAC signatures on cache entries, for backends other processes can write to.

A shared Redis is reachable by anything that holds its URL; an entry written
there behind the cache's back (a changed answer, or an answer moved under
another tenant's key) would be served as if the model had said it. With a
signing key, the cache signs what it stores and serves only entries whose
signature checks out. The signature covers the exact key, scope, namespace,
embedded prompt text and the whole response, so neither the answer nor where
it may be served can be changed without the key. The vector is not covered:
a changed vector can only bring the entry up as a candidate, and the guards
compare the (signed) prompt text before serving it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from costopt_core.cache.entry import CacheEntry

__all__ = ["sign", "signature_of", "verify"]

_VERSION = b"costopt-cache-sig/v1"


def signature_of(entry: CacheEntry, key: bytes) -> str:
    """The hex HMAC-SHA256 of ``entry`` (its response's own signature left out)."""
    unsigned = dataclasses.replace(entry.response, signature=None)
    mac = hmac.new(key, _VERSION, hashlib.sha256)
    for part in (entry.key, entry.scope, entry.namespace, entry.prompt_text, unsigned.to_json()):
        data = part.encode("utf-8", "surrogatepass")
        # Length-prefixed, so moving bytes from one part to the next changes the MAC.
        mac.update(len(data).to_bytes(8, "big"))
        mac.update(data)
    return mac.hexdigest()


def sign(entry: CacheEntry, key: bytes) -> CacheEntry:
    """``entry`` with its response carrying the signature."""
    response = dataclasses.replace(entry.response, signature=signature_of(entry, key))
    return dataclasses.replace(entry, response=response)


def verify(entry: CacheEntry, key: bytes) -> bool:
    """True when ``entry`` carries a valid signature under ``key`` (unsigned: False)."""
    got = entry.response.signature
    if not got:
        return False
    return hmac.compare_digest(got, signature_of(entry, key))
