"""Digests that do not load OpenSSL's libcrypto when squall's modules are imported.

``import hashlib`` loads ``_hashlib`` and with it libcrypto (~3.5 MB of RSS and 2.5-4 ms of CPU in
a fresh process, whatever digest is used). The modules a Lambda consumer imports at init need
only BLAKE2b (event ids, dead-letter keys, column names) and SHA-256 of a few short texts (a
schema's cache key, a reference's name): CPython's own modules compute both, and ``hashlib``'s
``blake2b`` *is* ``_blake2.blake2b`` (OpenSSL's is never used for it). A digest that runs per
line or per record of a large input (the file spouts' SHA-256, the KPL check's MD5) still comes
from ``hashlib``, imported where it is first used: OpenSSL's SHA-256 uses the CPU's SHA
instructions.
"""

from __future__ import annotations

try:
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a CPython built without its own BLAKE2
    from hashlib import blake2b

try:  # CPython's own SHA-256: the same digest, for short texts (no hardware SHA instructions)
    from _sha256 import sha256 as small_sha256  # CPython 3.11
except ImportError:  # pragma: no cover - depends on the interpreter
    try:
        from _sha2 import sha256 as small_sha256  # CPython 3.12 and later
    except ImportError:
        from hashlib import sha256 as small_sha256

__all__ = ["blake2b", "small_sha256"]
