"""Helpers shared by the benchmark scripts (each run as ``python bench/<name>.py``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from broadgauge.wire.envelope import LayerKey, dump_json, seal, unseal
from broadgauge.wire.handshake import Channel
from broadgauge.wire.keys import Key


def main_parser(
    doc: str | None, child_main: Callable[[list[str]], None]
) -> argparse.ArgumentParser:
    """The script's argument parser, described by the first line of its ``doc``; but in one of
    the script's own ``--child`` processes, run ``child_main`` on the other arguments and exit."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        sys.exit(0)
    return argparse.ArgumentParser(description=(doc or "").split("\n")[0])


def crypto_floor(size: int, repeat: int = 20000) -> float:
    """Seconds of key derivation and AEAD work in one round trip of a ``size``-byte payload:
    one message each way on one link."""
    inner = LayerKey(Key.generate(), os.urandom(32))
    outer = LayerKey(Key.generate(), os.urandom(32))
    plaintext = dump_json("x" * size)
    # Sizes as on the wire: the outer layer seals the quoted hex of the inner blob.
    inner_len = len(plaintext)
    outer_plaintext = b'"' + b"0" * (2 * (inner_len + 40)) + b'"'
    info, nonce = os.urandom(32), os.urandom(24)
    started = time.perf_counter()
    for _ in range(repeat):
        for _side in range(2):  # one sealed frame each way ...
            inner_blob = seal(inner.message_key(info), plaintext, nonce)
            outer_blob = seal(outer.message_key(info), outer_plaintext, nonce)
            # ... and opened at the other end
            unseal(outer.message_key(info), outer_blob)
            unseal(inner.message_key(info), inner_blob)
    return (time.perf_counter() - started) / repeat


def write_link(path: Path) -> None:
    """Fresh keys and salts for one link (what a handshake settles), for both ends to read."""
    parts = [Key.generate().secret_bytes.hex(), Key.generate().secret_bytes.hex()]
    parts += [os.urandom(32).hex(), os.urandom(32).hex()]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(" ".join(parts), encoding="ascii")
    os.replace(tmp, path)


def read_channel(path: Path) -> Channel:
    """One end's channel of the link whose keys :func:`write_link` left in ``path``."""
    inner, outer, inner_salt, outer_salt = path.read_text(encoding="ascii").split()
    return Channel(
        LayerKey(Key.from_hex(inner), bytes.fromhex(inner_salt)),
        LayerKey(Key.from_hex(outer), bytes.fromhex(outer_salt)),
    )
