"""QR codes for the terminal: UTF-8 half blocks (default) or ANSI colour blocks.

Both are drawn dark-on-light with explicit colours and a quiet zone of four
modules, so they scan the same in a dark and in a light terminal theme
(scanners expect dark modules on a light background).
"""

from __future__ import annotations

import qrcode

_DARK_ON_LIGHT = "\x1b[30;107m"  # black on bright white
_RESET = "\x1b[0m"
_BLACK_BG, _WHITE_BG = "\x1b[40m", "\x1b[107m"
STYLES = ("utf8", "ansi", "none")
# "plain": half blocks with no escape sequence, for text an SSH client shows in a prompt (OpenSSH
# escapes control characters there). A block is a LIGHT module: with no colours to set, the code is
# drawn for the usual dark terminal background (as qrencode -t UTF8 does), quiet zone included.


def matrix(data: str) -> list[list[bool]]:
    """The modules of ``data``'s QR code, True = dark, with a 4-module quiet zone."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    code.add_data(data)
    code.make(fit=True)
    return code.get_matrix()


def render(data: str, style: str = "utf8") -> str:
    if style == "none":
        return ""
    modules = matrix(data)
    if style == "ansi":
        lines = []
        for row in modules:
            cells = "".join((_BLACK_BG if dark else _WHITE_BG) + "  " for dark in row)
            lines.append(cells + _RESET)
        return "\n".join(lines) + "\n"
    if style == "plain":
        modules = [[not dark for dark in row] for row in modules]
    if len(modules) % 2:
        modules = modules + [[style == "plain"] * len(modules[0])]
    chars = {(True, True): "\u2588", (True, False): "\u2580", (False, True): "\u2584", (False, False): " "}
    lines = []
    for top, bottom in zip(modules[0::2], modules[1::2]):
        drawn = "".join(chars[pair] for pair in zip(top, bottom))
        lines.append(drawn if style == "plain" else _DARK_ON_LIGHT + drawn + _RESET)
    return "\n".join(lines) + "\n"
