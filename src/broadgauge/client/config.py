"""The client file: ``url`` and ``key = { data = "<64 hex>" }`` (notes §2.2).

The same file the official ``openportal.load_config`` reads; both ``key = { data = … }``
and a ``[key]`` table are accepted.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ClientConfig"]


@dataclass(frozen=True)
class ClientConfig:
    """Where the bridge is and the key requests are signed with."""

    url: str
    key: bytes

    @classmethod
    def loads(cls, text: str) -> ClientConfig:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise OSError(f"client file is not valid TOML: {exc}") from None
        url, key = document.get("url"), document.get("key")
        if not isinstance(url, str) or not url:
            raise OSError("client file has no url")
        data = key.get("data") if isinstance(key, Mapping) else None
        try:
            raw = bytes.fromhex(data) if isinstance(data, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise OSError('client file needs key = { data = "<64 hex digits>" }')
        # A base URL with a path must end in "/" for relative joins to keep that path.
        return cls(url, raw)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClientConfig:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise OSError(f"cannot read client file {path}: {exc}") from None
        return cls.loads(text)
