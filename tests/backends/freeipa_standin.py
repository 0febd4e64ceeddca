"""A stand-in for a FreeIPA server's JSON-RPC API, for tests.

**Why a stand-in:** a FreeIPA server cannot run here (real-backends.md §4: not packaged
for Debian 12, and it needs systemd, a KDC, Dogtag PKI and DNS).  This module serves, on
``http://127.0.0.1:<free port>`` from a thread, the two endpoints OpenPortal uses, over an
in-memory store, keeping to FreeIPA's wire shapes (ipaserver/rpcserver.py, ipalib/errors.py):

* ``POST /ipa/session/login_password`` - form ``user``/``password``; needs a ``Referer``
  (else 400) and a form content type (else 400); bad credentials give 401 with
  ``X-IPA-Rejection-Reason: invalid-password``; success sets the ``ipa_session`` cookie
  (``Path=/ipa``; without ``Secure``, since this stand-in speaks plain HTTP).
* ``POST /ipa/session/json`` - 401 with an empty body without a live session; otherwise
  ``{"result": …, "error": null, "id": n, "principal": "admin@EXAMPLE.TEST",
  "version": "4.11.1"}`` or ``error = {"code", "message", "name", "data"}``.
* methods ``user_add, user_find, user_show, user_mod, user_enable, user_disable,
  group_add, group_find, group_show, group_add_member, group_remove_member`` with
  FreeIPA's errors: 4001 NotFound, 4002 DuplicateEntry, 4009 AlreadyActive,
  4010 AlreadyInactive, 4202 EmptyModlist, 3007 RequirementError, 905 CommandError.
  Attribute values are lists of strings (``nsaccountlock`` is a boolean); login names
  and group names are lower-cased, as FreeIPA does; ``cn``, ``objectclass`` and
  ``krbprincipalname`` appear only with ``all=True``; a new user joins ``ipausers`` and,
  unless ``noprivate``, gets a private group; ids come from one DNA-like counter; find
  commands honour ``sizelimit`` (default 100) and report ``truncated``.

Tests inspect :attr:`FreeIpaStandIn.calls` (every JSON-RPC request), ``logins`` and
``unauthorised``, seed unmanaged users with :meth:`seed_user`, and end every session with
:meth:`expire_sessions` to exercise the client's re-login.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class _Server(ThreadingHTTPServer):
    # The stdlib's listen backlog is 5; the concurrency tests open 20 connections at once,
    # and httpd's backlog is 511.
    request_queue_size = 128


PRINCIPAL = "admin@EXAMPLE.TEST"
SERVER_VERSION = "4.11.1"
BASE = "dc=example,dc=test"
DEFAULT_GROUP = "ipausers"


class IpaError(Exception):
    """A FreeIPA PublicError: errno, class name and message."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.name, self.message = code, name, message


def _not_found(key: str, kind: str) -> IpaError:
    return IpaError(4001, "NotFound", f"{key}: {kind} not found")


class FreeIpaStandIn:
    """The in-memory directory plus the HTTP server in front of it."""

    def __init__(self, user: str = "admin", password: str = "Secret123", first_id: int = 1_500_000):
        self.user, self.password = user, password
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.sessions: set[str] = set()
        self.calls: list[dict[str, Any]] = []
        self.logins = 0
        self.unauthorised = 0
        #: Methods whose next call is answered by closing the connection, unanswered and
        #: not carried out (a keep-alive connection the server dropped as it was reused).
        self.drop_next: set[str] = set()
        self.lock = threading.Lock()
        self._next_id = first_id
        self.groups[DEFAULT_GROUP] = {
            "cn": DEFAULT_GROUP,
            "description": "Default group for all users",
            "gidnumber": None,
            "members": [],
        }
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on a free loopback port; return the base URL (``http://127.0.0.1:N``)."""
        standin = self

        class Handler(_Handler):
            pass

        Handler.standin = standin
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    # -- test hooks -----------------------------------------------------------------------

    def expire_sessions(self) -> None:
        """End every session, as a FreeIPA session timeout does."""
        with self.lock:
            self.sessions.clear()

    def methods(self) -> list[str]:
        """The JSON-RPC methods received, in order."""
        with self.lock:
            return [call["method"] for call in self.calls]

    def seed_user(self, uid: str, uidnumber: int, groups: tuple[str, ...] = ()) -> None:
        """An account made outside OpenPortal (not in ``openportal``)."""
        with self.lock:
            self.users[uid] = {
                "uid": uid,
                "givenname": "Pre",
                "sn": "Existing",
                "cn": "Pre Existing",
                "uidnumber": uidnumber,
                "gidnumber": uidnumber,
                "homedirectory": f"/home/{uid}",
                "loginshell": "/bin/sh",
                "userclass": [],
                "nsaccountlock": False,
            }
            for group in (DEFAULT_GROUP, *groups):
                self.groups.setdefault(
                    group, {"cn": group, "description": None, "gidnumber": None, "members": []}
                )["members"].append(uid)

    # -- rendering ------------------------------------------------------------------------

    def _groups_of(self, uid: str) -> list[str]:
        return sorted(name for name, g in self.groups.items() if uid in g["members"])

    def _user_view(self, uid: str, full: bool) -> dict[str, Any]:
        u = self.users[uid]
        view: dict[str, Any] = {
            "dn": f"uid={uid},cn=users,cn=accounts,{BASE}",
            "uid": [uid],
            "givenname": [u["givenname"]],
            "sn": [u["sn"]],
            "uidnumber": [str(u["uidnumber"])],
            "gidnumber": [str(u["gidnumber"])],
            "homedirectory": [u["homedirectory"]],
            "loginshell": [u["loginshell"]],
            "nsaccountlock": u["nsaccountlock"],
        }
        if u["userclass"]:
            view["userclass"] = list(u["userclass"])
        if groups := self._groups_of(uid):  # FreeIPA leaves empty attributes out
            view["memberof_group"] = groups
        if full:
            view["cn"] = [u["cn"]]
            view["krbprincipalname"] = [f"{uid}@EXAMPLE.TEST"]
            view["objectclass"] = ["top", "person", "posixaccount", "inetorgperson", "ipaobject"]
        return view

    def _group_view(self, cn: str, full: bool) -> dict[str, Any]:
        g = self.groups[cn]
        view: dict[str, Any] = {"dn": f"cn={cn},cn=groups,cn=accounts,{BASE}", "cn": [cn]}
        if g["gidnumber"] is not None:
            view["gidnumber"] = [str(g["gidnumber"])]
        if g["description"]:
            view["description"] = [g["description"]]
        if g["members"]:
            view["member_user"] = sorted(g["members"])
        if full:
            view["objectclass"] = ["top", "groupofnames", "nestedgroup", "ipausergroup"]
            if g["gidnumber"] is not None:
                view["objectclass"].append("posixgroup")
        return view

    def _allocate(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    # -- commands -------------------------------------------------------------------------

    def dispatch(self, method: str, args: list[Any], options: dict[str, Any]) -> Any:
        handler = getattr(self, f"cmd_{method}", None)
        if handler is None:
            raise IpaError(905, "CommandError", f"unknown command '{method}'")
        with self.lock:
            return handler(args, options)

    @staticmethod
    def _key(args: list[Any], options: dict[str, Any], name: str) -> str:
        # The primary key may come positionally or by name, as in FreeIPA.
        value = args[0] if args else options.get(name)
        if not value:
            raise IpaError(3007, "RequirementError", f"'{name}' is required")
        return str(value).lower()

    def _user(self, args: list[Any], options: dict[str, Any]) -> str:
        uid = self._key(args, options, "uid")
        if uid not in self.users:
            raise _not_found(uid, "user")
        return uid

    def _group(self, args: list[Any], options: dict[str, Any]) -> str:
        cn = self._key(args, options, "cn")
        if cn not in self.groups:
            raise _not_found(cn, "group")
        return cn

    def cmd_user_add(self, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        uid = self._key(args, options, "uid")
        for required in ("givenname", "sn"):
            if not options.get(required):
                raise IpaError(3007, "RequirementError", f"'{required}' is required")
        if uid in self.users:
            raise IpaError(4002, "DuplicateEntry", f'user with name "{uid}" already exists')
        number = self._allocate()
        gid = options.get("gidnumber")
        if not options.get("noprivate"):
            if uid in self.groups:
                raise IpaError(
                    4024,
                    "ManagedGroupExistsError",
                    f"Unable to create private group. A group '{uid}' already exists.",
                )
            self.groups[uid] = {
                "cn": uid,
                "description": f"User private group for {uid}",
                "gidnumber": number,
                "members": [],
            }
            gid = gid or number
        userclass = options.get("userclass") or []
        self.users[uid] = {
            "uid": uid,
            "givenname": options["givenname"],
            "sn": options["sn"],
            "cn": options.get("cn") or f"{options['givenname']} {options['sn']}",
            "uidnumber": number,
            "gidnumber": int(gid) if gid is not None else number,
            "homedirectory": options.get("homedirectory") or f"/home/{uid}",
            "loginshell": options.get("loginshell") or "/bin/sh",
            "userclass": [userclass] if isinstance(userclass, str) else list(userclass),
            "nsaccountlock": False,
        }
        self.groups[DEFAULT_GROUP]["members"].append(uid)
        view = self._user_view(uid, bool(options.get("all")))
        return {"result": view, "value": uid, "summary": f'Added user "{uid}"'}

    def cmd_user_show(self, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        uid = self._user(args, options)
        return {
            "result": self._user_view(uid, bool(options.get("all"))),
            "value": uid,
            "summary": None,
        }

    def cmd_user_find(self, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        criteria = str(args[0]).lower() if args and args[0] else ""
        uids = sorted(self.users)
        if criteria:
            fields = ("uid", "givenname", "sn", "cn")
            uids = [
                u for u in uids if any(criteria in str(self.users[u][f]).lower() for f in fields)
            ]
        if options.get("uid"):
            uids = [u for u in uids if u == str(options["uid"]).lower()]
        if options.get("in_group"):
            group = self.groups.get(str(options["in_group"]).lower())
            uids = [u for u in uids if group is not None and u in group["members"]]
        return self._found(uids, options, self._user_view, "user")

    def _found(
        self, keys: list[str], options: dict[str, Any], view: Any, kind: str
    ) -> dict[str, Any]:
        limit = int(options.get("sizelimit", 100))
        truncated = 0 < limit < len(keys)
        keys = keys[:limit] if truncated else keys
        entries = [view(key, bool(options.get("all"))) for key in keys]
        summary = f"{len(entries)} {kind}{'' if len(entries) == 1 else 's'} matched"
        return {
            "result": entries,
            "count": len(entries),
            "truncated": truncated,
            "summary": summary,
        }

    def cmd_user_mod(self, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        uid = self._user(args, options)
        user = self.users[uid]
        changed = False
        for field in ("homedirectory", "loginshell", "givenname", "sn", "cn"):
            if field in options and options[field] != user[field]:
                user[field] = options[field]
                changed = True
        if not changed:
            raise IpaError(4202, "EmptyModlist", "no modifications to be performed")
        view = self._user_view(uid, bool(options.get("all")))
        return {"result": view, "value": uid, "summary": f'Modified user "{uid}"'}

    def _set_lock(self, args: list[Any], options: dict[str, Any], locked: bool) -> dict[str, Any]:
        uid = self._user(args, options)
        if self.users[uid]["nsaccountlock"] == locked:
            if locked:
                raise IpaError(4010, "AlreadyInactive", "This entry is already disabled")
            raise IpaError(4009, "AlreadyActive", "This entry is already enabled")
        self.users[uid]["nsaccountlock"] = locked
        verb = "Disabled" if locked else "Enabled"
        return {"result": True, "value": uid, "summary": f'{verb} user account "{uid}"'}

    def cmd_user_enable(self, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        return self._set_lock(args, options, False)

    def cmd_user_disable(self, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        return self._set_lock(args, options, True)

    def cmd_group_add(self, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        cn = self._key(args, options, "cn")
        if cn in self.groups:
            raise IpaError(4002, "DuplicateEntry", f'group with name "{cn}" already exists')
        gid = None if options.get("nonposix") else options.get("gidnumber") or self._allocate()
        self.groups[cn] = {
            "cn": cn,
            "description": options.get("description"),
            "gidnumber": gid,
            "members": [],
        }
        view = self._group_view(cn, bool(options.get("all")))
        return {"result": view, "value": cn, "summary": f'Added group "{cn}"'}

    def cmd_group_show(self, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        cn = self._group(args, options)
        return {
            "result": self._group_view(cn, bool(options.get("all"))),
            "value": cn,
            "summary": None,
        }

    def cmd_group_find(self, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        criteria = str(args[0]).lower() if args and args[0] else ""
        names = sorted(
            name
            for name, g in self.groups.items()
            if criteria in name or criteria in str(g["description"] or "").lower()
        )
        return self._found(names, options, self._group_view, "group")

    def _members(self, args: list[Any], options: dict[str, Any], add: bool) -> dict[str, Any]:
        cn = self._group(args, options)
        users = options.get("user") or []
        members = self.groups[cn]["members"]
        failed: list[list[str]] = []
        completed = 0
        for raw in [users] if isinstance(users, str) else users:
            uid = str(raw).lower()
            if uid not in self.users:
                failed.append([uid, "no such entry"])
            elif add and uid in members:
                failed.append([uid, "This entry is already a member"])
            elif not add and uid not in members:
                failed.append([uid, "This entry is not a member"])
            else:
                if add:
                    members.append(uid)
                else:
                    members.remove(uid)
                completed += 1
        return {
            "result": self._group_view(cn, bool(options.get("all"))),
            "failed": {
                "member": {"user": failed, "group": [], "service": [], "idoverrideuser": []}
            },
            "completed": completed,
        }

    def cmd_group_add_member(self, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        return self._members(args, options, True)

    def cmd_group_remove_member(self, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
        return self._members(args, options, False)


class _Handler(BaseHTTPRequestHandler):
    standin: FreeIpaStandIn
    protocol_version = "HTTP/1.1"  # keep-alive, like FreeIPA's httpd
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle plus the client's
    # delayed ACK adds 40 ms to every call.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows failures, not access logs

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.headers.get("Referer"):
            self._reply(400, b"denied", {"Content-Type": "text/plain"})
        elif self.path == "/ipa/session/login_password":
            self._login(body)
        elif self.path == "/ipa/session/json":
            self._json(body)
        else:
            self._reply(404)

    def _login(self, body: bytes) -> None:
        standin = self.standin
        if not self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            self._reply(400, b"Content-Type must be application/x-www-form-urlencoded")
            return
        form = parse_qs(body.decode())
        if form.get("user") != [standin.user] or form.get("password") != [standin.password]:
            with standin.lock:
                standin.unauthorised += 1
            headers = {"X-IPA-Rejection-Reason": "invalid-password", "Content-Type": "text/html"}
            self._reply(401, b"<html><body>Unauthorized</body></html>", headers)
            return
        token = secrets.token_hex(16)
        with standin.lock:
            standin.sessions.add(token)
            standin.logins += 1
        cookie = f"ipa_session=MagBearerToken={token}; Path=/ipa; HttpOnly"
        self._reply(200, b"", {"Set-Cookie": cookie, "Content-Type": "text/plain"})

    def _json(self, body: bytes) -> None:
        standin = self.standin
        cookies = SimpleCookie(self.headers.get("Cookie", ""))
        session = cookies["ipa_session"].value if "ipa_session" in cookies else ""
        with standin.lock:
            live = session.removeprefix("MagBearerToken=") in standin.sessions
            if not live:
                standin.unauthorised += 1
        if not live:
            self._reply(401)
            return
        request = json.loads(body)
        method, (args, options) = request["method"], request["params"]
        with standin.lock:
            dropped = method in standin.drop_next
            standin.drop_next.discard(method)
        if dropped:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        with standin.lock:
            standin.calls.append({"method": method, "args": args, "options": options})
        result, error = None, None
        try:
            result = standin.dispatch(method, list(args), dict(options))
        except IpaError as exc:
            error = {"code": exc.code, "message": exc.message, "name": exc.name, "data": {}}
        reply = {
            "result": result,
            "error": error,
            "id": request.get("id"),
            "principal": PRINCIPAL,
            "version": SERVER_VERSION,
        }
        headers = {"Content-Type": "application/json; charset=utf-8"}
        self._reply(200, json.dumps(reply).encode(), headers)
