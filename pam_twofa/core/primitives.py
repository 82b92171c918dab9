"""The interpreter's C primitives that the login path uses directly, in one place.

``hmac``, ``hashlib``, ``socket`` and ``secrets`` are thin Python layers over
these, and importing the layers costs more than the whole login budget
(docs/performance.md). Each primitive is imported here, lazily where it is
not needed by every login, and the Python version differences live here too
(Python 3.12 merged ``_sha256`` and ``_sha512`` into ``_sha2``).
"""

from _operator import _compare_digest as compare_digest
from errno import ELOOP  # what open(O_NOFOLLOW) gives for a symbolic link

TYPE_CHECKING = False  # True for mypy only: importing typing would cost the login path
if TYPE_CHECKING:
    from _hashlib import HASH
    from collections.abc import Callable

__all__ = ["ELOOP", "address_functions", "compare_digest", "hash_constructor", "pbkdf2_sha256", "sha256_hex"]


def hash_constructor(algorithm: str) -> "tuple[Callable[[bytes], HASH], int]":
    """(constructor, block size) of SHA1, SHA256 or SHA512."""
    if algorithm == "SHA1":
        from _sha1 import sha1

        return sha1, 64
    if algorithm == "SHA256":
        try:
            from _sha256 import sha256
        except ImportError:  # Python 3.12+
            from _sha2 import sha256
        return sha256, 64
    if algorithm == "SHA512":
        try:
            from _sha512 import sha512
        except ImportError:  # Python 3.12+
            from _sha2 import sha512
        return sha512, 128
    raise ValueError("unsupported TOTP algorithm (use SHA1, SHA256 or SHA512)")


def sha256_hex(data: bytes) -> str:
    return hash_constructor("SHA256")[0](data).hexdigest()


def pbkdf2_sha256(secret: bytes, salt: bytes, iterations: int) -> bytes:
    from _hashlib import pbkdf2_hmac

    return pbkdf2_hmac("sha256", secret, salt, iterations)


def address_functions() -> "tuple[int, int, Callable[[int, str], bytes], Callable[[int, bytes], str]]":
    """(AF_INET, AF_INET6, inet_pton, inet_ntop): strict parsing without the ``socket`` module.
    Imported by the modules that parse addresses, which a login loads only when it needs them."""
    from _socket import AF_INET, AF_INET6, inet_ntop, inet_pton

    return AF_INET, AF_INET6, inet_pton, inet_ntop
