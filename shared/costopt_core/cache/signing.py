"""HMAC signatures on cache entries, for backends other processes can write to.

A shared Redis is reachable by anything that holds its URL; an entry written
there behind the cache's back (a changed answer, or an answer moved under
another tenant's key) would be served as if the model had said it. With a
signing key, the cache signs what it stores and serves only entries whose
signature checks out. The signature covers the exact key, scope, namespace,
embedded prompt text, the whole response, the expiry and the tags, so neither
the answer, where it may be served, how long, nor what invalidates it can be
changed without the key. The vector is not covered:
a changed vector can only bring the entry up as a candidate, and the guards
compare the (signed) prompt text before serving it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from costopt_core.cache.entry import CacheEntry

__all__ = ["sign", "signature_of", "verify"]

_V1 = b"costopt-cache-sig/v1"
_V2 = b"costopt-cache-sig/v2"
#: Marks a v2 signature; a bare hex signature is a v1 one.
_V2_PREFIX = "v2:"


def _mac(entry: CacheEntry, key: bytes, version: bytes) -> str:
    unsigned = dataclasses.replace(entry.response, signature=None)
    parts = [entry.key, entry.scope, entry.namespace, entry.prompt_text, unsigned.to_json()]
    if version == _V2:
        # When it stops being served and what invalidates it: without these, a
        # writer without the key could make an entry outlive its TTL or escape
        # invalidation by its tag.
        parts.append("" if entry.expires_at is None else repr(float(entry.expires_at)))
        parts += sorted(entry.tags)
    mac = hmac.new(key, version, hashlib.sha256)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        # Length-prefixed, so moving bytes from one part to the next changes the MAC.
        mac.update(len(data).to_bytes(8, "big"))
        mac.update(data)
    return mac.hexdigest()


def signature_of(entry: CacheEntry, key: bytes) -> str:
    """The HMAC-SHA256 signature of ``entry`` (its response's own signature left out)."""
    return _V2_PREFIX + _mac(entry, key, _V2)


def sign(entry: CacheEntry, key: bytes) -> CacheEntry:
    """``entry`` with its response carrying the signature."""
    response = dataclasses.replace(entry.response, signature=signature_of(entry, key))
    return dataclasses.replace(entry, response=response)


def verify(entry: CacheEntry, key: bytes) -> bool:
    """True when ``entry`` carries a valid signature under ``key`` (unsigned: False).

    Entries signed before signatures covered the expiry and the tags (v1) still
    verify on what v1 covered, so an upgrade does not drop a signed cache.
    """
    got = entry.response.signature
    if not got:
        return False
    if got.startswith(_V2_PREFIX):
        return hmac.compare_digest(got, signature_of(entry, key))
    return hmac.compare_digest(got, _mac(entry, key, _V1))
