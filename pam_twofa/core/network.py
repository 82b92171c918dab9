"""Client addresses and CIDR networks, matched as integers (pure).

Parsing uses ``_socket.inet_pton`` (a builtin, strict, no import cost)
instead of ``ipaddress``, which costs the login path ~4 ms to import.
"""

from pam_twofa.core.primitives import address_functions

AF_INET, AF_INET6, inet_pton, _inet_ntop = address_functions()


class Network:
    __slots__ = ("text", "bits", "value", "prefix")

    def __init__(self, text: str, bits: int, value: int, prefix: int) -> None:
        self.text = text
        self.bits = bits
        self.value = value
        self.prefix = prefix

    def contains(self, address: tuple[int, int]) -> bool:
        bits, value = address
        if bits != self.bits:
            return False
        shift = bits - self.prefix
        return value >> shift == self.value >> shift


def parse_address(text: str | None) -> tuple[int, int] | None:
    """(bits, integer) of an IPv4/IPv6 address, or None for hostnames, garbage, None.

    An IPv6 zone (``fe80::1%eth0``; letters, digits, ``_.-``) is dropped, and IPv4-mapped IPv6
    addresses (``::ffff:10.0.0.1``) count as their IPv4 address.
    """
    if not text or len(text) > 128 or not text.isascii():
        return None
    if ":" in text:
        head, percent, zone = text.partition("%")
        if percent and not (zone and all(c.isalnum() or c in "_.-" for c in zone)):
            return None  # not an interface name: no address (it would reach the log as an exempt client)
        try:
            raw = inet_pton(AF_INET6, head)
        except (OSError, ValueError):
            return None
        if raw[:12] == b"\0" * 10 + b"\xff\xff":
            return 32, int.from_bytes(raw[12:], "big")
        return 128, int.from_bytes(raw, "big")
    try:
        raw = inet_pton(AF_INET, text)
    except (OSError, ValueError):
        return None
    return 32, int.from_bytes(raw, "big")


def parse_network(text: str) -> Network:
    """A CIDR (``10.0.0.0/8``, ``2001:db8::/32``) or single address; ValueError if invalid.

    Host bits set below the prefix are an error, as an admin who wrote
    ``10.0.0.1/8`` most likely meant something else. IPv4-mapped clients are
    matched as IPv4, so write IPv4 networks for IPv4 clients.
    """
    addr, sep, prefix_text = text.partition("/")
    family, bits = (AF_INET6, 128) if ":" in addr else (AF_INET, 32)
    try:
        value = int.from_bytes(inet_pton(family, addr), "big")
    except (OSError, ValueError):
        raise ValueError("not an IPv4 or IPv6 network") from None
    if sep:
        if not (prefix_text.isascii() and prefix_text.isdigit()) or len(prefix_text) > 3:
            raise ValueError("prefix length must be a number")
        prefix = int(prefix_text)
        if prefix > bits:
            raise ValueError(f"prefix length must be at most {bits}")
    else:
        prefix = bits
    if value & ((1 << (bits - prefix)) - 1):
        raise ValueError("host bits are set; did you mean the network address?")
    return Network(text, bits, value, prefix)
