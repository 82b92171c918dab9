"""What an authenticator app is given: the ``otpauth://`` URI and the key typed by hand (pure).

Shared by ``twofa-enroll`` and enrollment at login (``enforce.unenrolled: enroll``),
so that both show the same URI, key and words.
"""

import base64
from urllib.parse import quote, urlencode

SCAN = "Scan this QR code with your authenticator app (Google Authenticator, FreeOTP, Aegis, ...):"
ADD_BY_HAND = (
    "Add an account to your authenticator app (Google Authenticator, FreeOTP, Aegis, ...) by hand with this key"
    " (time-based):"
)
CANNOT_SCAN = "Cannot scan it? Add an account by hand with this key (time-based):"
OPEN_URI = "or open this URI on the device:"


def base32(key: bytes) -> str:
    return base64.b32encode(key).decode().rstrip("=")


def group4(text: str) -> str:
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def provisioning_uri(
    key: bytes, user: str, hostname: str, issuer: str, digits: int, period: int, algorithm: str
) -> str:
    """``otpauth://totp/ISSUER:USER@HOST?secret=...&issuer=...`` (Key Uri Format).

    ``:`` separates issuer and account in the label, so it is removed from
    both; algorithm, digits and period appear only when not the defaults,
    as some apps reject parameters they do not expect.
    """

    issuer = issuer.replace(":", "")
    label = quote(issuer, safe="") + ":" + quote(f"{user}@{hostname}".replace(":", ""), safe="@")
    params = {"secret": base32(key), "issuer": issuer}
    if algorithm != "SHA1":
        params["algorithm"] = algorithm
    if digits != 6:
        params["digits"] = str(digits)
    if period != 30:
        params["period"] = str(period)
    return f"otpauth://totp/{label}?{urlencode(params, quote_via=quote)}"


def setup_lines(uri: str, key: bytes, picture: str) -> list[str]:
    """The lines that set up an app: the QR code ``picture`` (none when ""), the key in groups of
    four, and the URI. Without a picture there is nothing to scan, so no "scan this" heading."""
    key_line = "    " + group4(base32(key))
    if picture:
        lines = [SCAN, picture.rstrip("\n"), CANNOT_SCAN, key_line]
    else:
        lines = [ADD_BY_HAND, key_line]
    return lines + [OPEN_URI, "    " + uri]
