"""Hosts on one machine: a Linux network namespace per host, joined through a switch namespace.

:class:`Hosts` creates, for one test run:

* a *switch* namespace holding a Linux bridge ``br0`` and nothing else (no address);
* one namespace per host, with loopback up and one veth link, ``eth0``, whose other end is
  a port of ``br0`` in the switch namespace.  Host ``n`` (counting from 1, in the order
  given) gets ``198.18.0.n/24`` on ``eth0``.

198.18.0.0/15 is the range RFC 2544 sets aside for benchmarking network devices; it is never
routed on the Internet.  The addresses exist only inside the namespaces made here: the root
namespace gets no address and no interface, no namespace has a default route (so any other
destination is simply unreachable), and IPv6 is switched off in every namespace before its
links exist, so that the kernel's own IPv6 chatter (router solicitations, MLD) never goes on
the wire either.

Every namespace is named ``bgnet-<pid>-<token>-<host>``: the pid of the test process and a
random token, so parallel runs (and a leftover of an earlier run) never collide.
:meth:`Hosts.delete` removes every namespace this object made; it runs from the harness's
``finally`` and from an ``atexit`` hook.  :func:`delete_leftovers` removes namespaces with
this prefix whose test process is gone (an earlier run killed before it could clean up), and
only those.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

PREFIX = "bgnet-"
SUBNET = "198.18.0.0/24"
#: Our namespaces' names: the prefix, the test process's pid, a token, the host.
_OURS = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+-")
#: The one interface of every host, and the bridge in the switch namespace.
HOST_INTERFACE = "eth0"
SWITCH_BRIDGE = "br0"
COMMAND_TIMEOUT = 20.0
#: The IPv6 settings of a namespace (absent when the kernel has no IPv6).
IPV6 = Path("/proc/sys/net/ipv6/conf")


class NetnsError(RuntimeError):
    """An ``ip`` or ``nft`` command failed; the message holds the command and its stderr."""


def missing_requirements() -> str | None:
    """Why namespaces cannot be made here (not root, no ``ip``, no ``nft``), or ``None``."""
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns add, nft)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"network namespace tests need `{tool}` (install {package})"
    return None


def run(*command: str, stdin: str | None = None) -> str:
    """Run ``command`` to the end; its stdout.  :class:`NetnsError` if it fails."""
    try:
        done = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"`{' '.join(command)}` did not finish in {COMMAND_TIMEOUT:g} s") from exc
    if done.returncode != 0:
        script = f"\nscript:\n{stdin}" if stdin else ""
        raise NetnsError(
            f"`{' '.join(command)}` exited with {done.returncode}: {done.stderr.strip()}{script}"
        )
    return done.stdout


def namespaces() -> list[str]:
    """The names of every network namespace on the machine (``ip netns list``)."""
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_leftovers() -> list[str]:
    """Delete namespaces an earlier run of this harness left behind; the names deleted.

    Only names with our prefix whose test process no longer exists: a namespace of a run
    still going (in parallel) is left alone.  Processes still inside a leftover namespace
    are not touched (they are not ours to stop); deleting the name only unmounts it.
    """
    deleted = []
    for name in namespaces():
        match = _OURS.match(name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            run("ip", "netns", "delete", name)
            deleted.append(name)
    return deleted


class Hosts:
    """The namespaces and links of one run: a switch, and one host per name."""

    def __init__(self, names: Sequence[str]) -> None:
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"host names must be distinct and at least one: {list(names)}")
        if len(names) > 250:
            raise ValueError("at most 250 hosts fit in 198.18.0.0/24")
        self.names = tuple(names)
        self.token = secrets.token_hex(3)
        self._created: list[str] = []
        self.switch = self.namespace("switch")
        #: Each host's address on its link.
        self.addresses = {name: f"198.18.0.{index}" for index, name in enumerate(names, 1)}
        atexit.register(self.delete)

    def namespace(self, host: str) -> str:
        """The namespace of ``host`` (or of the switch: ``"switch"``)."""
        return f"{PREFIX}{os.getpid()}-{self.token}-{host}"

    def address(self, host: str) -> str:
        """``host``'s address, e.g. ``198.18.0.3``."""
        return self.addresses[host]

    def exec_prefix(self, host: str) -> list[str]:
        """The command prefix that runs a program inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(host)]

    def run_in(self, host: str, *command: str, stdin: str | None = None) -> str:
        """Run ``command`` inside ``host``'s namespace; its stdout."""
        return run(*self.exec_prefix(host), *command, stdin=stdin)

    # --- building and removing -----------------------------------------------------------

    def create(self) -> None:
        """Make the switch and every host, linked and addressed (deletes all on failure)."""
        try:
            self._add_namespace(self.switch)
            self._ip(self.switch, "link", "add", SWITCH_BRIDGE, "type", "bridge")
            self._ip(self.switch, "link", "set", SWITCH_BRIDGE, "up")
            for name in self.names:
                self._add_host(name)
        except BaseException:
            self.delete()
            raise

    def _add_namespace(self, namespace: str) -> None:
        run("ip", "netns", "add", namespace)
        self._created.append(namespace)
        if IPV6.exists():
            # Before any interface exists, so that none of them gets an IPv6 address either.
            # /proc/sys/net is the namespace's own, seen from a process inside it.
            writes = "; ".join(
                f"echo 1 > {IPV6 / scope / 'disable_ipv6'}" for scope in ("all", "default")
            )
            run("ip", "netns", "exec", namespace, "sh", "-c", writes)
        self._ip(namespace, "link", "set", "lo", "up")

    def _add_host(self, name: str) -> None:
        namespace = self.namespace(name)
        self._add_namespace(namespace)
        # The switch's end is named after the host (at most 15 characters, as Linux allows).
        port = f"v-{name}"[:15]
        self._ip(
            namespace, "link", "add", HOST_INTERFACE, "type", "veth",
            "peer", "name", port, "netns", self.switch,
        )  # fmt: skip
        self._ip(namespace, "addr", "add", f"{self.addresses[name]}/24", "dev", HOST_INTERFACE)
        self._ip(namespace, "link", "set", HOST_INTERFACE, "up")
        self._ip(self.switch, "link", "set", port, "master", SWITCH_BRIDGE, "up")

    @staticmethod
    def _ip(namespace: str, *args: str) -> None:
        run("ip", "-n", namespace, *args)

    def delete(self) -> list[str]:
        """Delete every namespace this object made (their veths go with them); the names.

        Safe to call twice, and from ``atexit``: whatever is already gone is skipped.
        """
        present = set(namespaces()) if self._created else set()
        deleted = []
        for namespace in reversed(self._created):
            if namespace in present:
                run("ip", "netns", "delete", namespace)
                deleted.append(namespace)
        self._created.clear()
        atexit.unregister(self.delete)
        return deleted

    def created(self) -> Iterable[str]:
        """The namespaces made so far and not yet deleted."""
        return tuple(self._created)
