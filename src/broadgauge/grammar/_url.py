"""An approximation of the WHATWG URL parser's accept/reject decision.

OpenPortal validates award links with Rust's ``url`` crate (``Url::parse``).
We only need its yes/no answer for absolute URLs; this module implements the
parts of the WHATWG algorithm that decide it: scheme syntax, the host rules of
the special schemes (non-empty host, forbidden code points, IPv4/IPv6 syntax)
and the port range.  IDNA mapping is approximated with Python's codec.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

__all__ = ["is_valid_url"]

_SPECIAL = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21, "file": None}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_FORBIDDEN_HOST = set("\x00\t\n\r #/:<>?@[\\]^|")
_FORBIDDEN_DOMAIN = _FORBIDDEN_HOST | set("%\x7f") | {chr(c) for c in range(0x20)}


def _valid_port(port: str) -> bool:
    if port == "":
        return True
    return port.isascii() and port.isdigit() and int(port) <= 65535


def _ends_in_number(host: str) -> bool:
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]
    last = labels[-1]
    if last and last.isascii() and last.isdigit():
        return True
    return bool(re.fullmatch(r"0[xX][0-9A-Fa-f]*", last))


def _valid_ipv4(host: str) -> bool:
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts = parts[:-1]
    if len(parts) > 4:
        return False
    numbers: list[int] = []
    for part in parts:
        if part == "":
            return False
        try:
            if re.fullmatch(r"0[xX][0-9A-Fa-f]*", part):
                numbers.append(int(part[2:] or "0", 16))
            elif re.fullmatch(r"0[0-7]+", part):
                numbers.append(int(part, 8))
            elif re.fullmatch(r"[0-9]+", part):
                numbers.append(int(part))
            else:
                return False
        except ValueError:
            return False
    if any(n > 255 for n in numbers[:-1]):
        return False
    return bool(numbers[-1] < 256 ** (5 - len(numbers)))


def _valid_punycode(label: str) -> bool:
    """An ``xn--`` label must decode to a valid non-ASCII label (UTS 46)."""
    if not label.startswith("xn--"):
        return True
    try:
        decoded = label[4:].encode("ascii").decode("punycode")
        decoded.encode("idna")
    except UnicodeError:
        return False
    return bool(decoded) and not decoded.isascii()


def _valid_host(host: str, special: bool) -> bool:
    if host.startswith("["):
        if not host.endswith("]"):
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if not special:
        return not any(ch in _FORBIDDEN_HOST for ch in host) and "%" not in host.replace("%", "", 0)
    if host == "":
        return False
    domain = urllib.parse.unquote(host)
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    domain = domain.lower()
    if domain == "" or any(ch in _FORBIDDEN_DOMAIN for ch in domain):
        return False
    if not all(_valid_punycode(label) for label in domain.split(".")):
        return False
    if _ends_in_number(domain):
        return _valid_ipv4(domain)
    return True


def is_valid_url(text: str) -> bool:
    """Would ``Url::parse(text)`` succeed?"""
    text = text.strip("".join(chr(c) for c in range(0x21)))
    text = text.replace("\t", "").replace("\n", "").replace("\r", "")
    match = _SCHEME.match(text)
    if match is None:
        return False
    scheme = match.group(0)[:-1].lower()
    rest = text[match.end() :]
    special = scheme in _SPECIAL
    if special:
        if scheme == "file":
            return True
        authority_text = rest.lstrip("/\\")
    elif rest.startswith("//"):
        authority_text = rest[2:]
    else:
        return True
    authority = re.split(r"[/?#\\]" if special else r"[/?#]", authority_text, maxsplit=1)[0]
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            return False
        host, port_part = hostport[: close + 1], hostport[close + 1 :]
        if port_part and not port_part.startswith(":"):
            return False
        port = port_part[1:]
    else:
        host, _, port = hostport.partition(":")
    if not special and host == "" and port == "":
        return True
    return _valid_port(port) and _valid_host(host, special)
