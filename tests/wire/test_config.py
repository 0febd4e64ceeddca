"""The service config (notes §1.11, §2.1, errata 2, 15, 16)."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from broadgauge.wire import (
    ClientEntry,
    ConfigError,
    EnvironmentEncryption,
    Invite,
    IpAllow,
    Key,
    ServerEntry,
    ServiceConfig,
    SimpleEncryption,
)

from .tables import (
    CLIENT,
    FUZZ,
    K1,
    K2,
    K3,
    K4,
    K5,
    K6,
    SERVER,
    SERVICE,
    keys,
    load_service,
    mostly,
    table,
    tables,
    values,
)

REFERENCE_CONFIG = f"""\
agent = "Instance"

[service]
name = "cluster"
url = "ws://cluster.internal:8046/"
ip = "0.0.0.0"
port = 8046
heathcheck_port = 8081
proxy_header = "X-Real-IP"
some_future_key = "ignored"

[[service.servers]]
name = "clusters"
url = "ws://platform.internal:8045/"
zone = "default"
inner_key = {{ data = "{K1}" }}
outer_key = {{ data = "{K2}" }}

[[service.servers]]
name = "other-portal"
url = "https://portal.example.org/op/"
inner_key = {{ data = "{K3}" }}
outer_key = {{ data = "{K4}" }}

[[service.clients]]
name = "freeipa"
ip = {{ IP = "10.0.0.7" }}
zone = "default"
inner_key = {{ data = "{K5}" }}
outer_key = {{ data = "{K6}" }}

[[service.clients]]
name = "slurm_1"
ip = {{ Range = "10.1.2.0/24" }}
zone = "remote>local"
inner_key = {{ data = "{K6}" }}
outer_key = {{ data = "{K5}" }}

[service.encryption.Environment]
key = "OPENPORTAL_CONFIG_PASSWORD"

[extras]
freeipa-server = "https://ipa.example.org"
"""


def _entry_keys(entry: ClientEntry | ServerEntry) -> tuple[str, str]:
    return entry.inner_key.to_table()["data"], entry.outer_key.to_table()["data"]


def test_reference_layout_loads() -> None:
    cfg = ServiceConfig.loads(REFERENCE_CONFIG)
    assert cfg.name == "cluster"
    assert cfg.url == "ws://cluster.internal:8046/"
    assert cfg.ip == "0.0.0.0"
    assert cfg.port == 8046
    assert cfg.healthcheck_port == 8081
    assert cfg.proxy_header == "X-Real-IP"
    assert cfg.encryption == EnvironmentEncryption("OPENPORTAL_CONFIG_PASSWORD")
    assert cfg.zone == "default"

    assert [s.name for s in cfg.servers] == ["clusters", "other-portal"]
    clusters, other = cfg.servers
    assert clusters.url == "ws://platform.internal:8045/"
    assert clusters.zone == "default"
    assert _entry_keys(clusters) == (K1, K2)
    assert other.url == "wss://portal.example.org"  # canonicalised on load
    assert other.zone == "default"  # zone defaults on input
    assert _entry_keys(other) == (K3, K4)

    freeipa, slurm = cfg.clients
    assert (freeipa.name, freeipa.zone, str(freeipa.ip)) == ("freeipa", "default", "10.0.0.7")
    assert not freeipa.ip.is_range
    assert _entry_keys(freeipa) == (K5, K6)
    assert (slurm.name, slurm.zone, str(slurm.ip)) == ("slurm_1", "remote>local", "10.1.2.0/24")
    assert slurm.ip.is_range
    assert slurm.peer == "slurm_1@remote>local"
    assert cfg.client("slurm_1") is slurm
    assert cfg.server("clusters", "default") is clusters


def test_notes_section_1_11_client_entry_loads() -> None:
    text = f"""
[service]
name = "portal"
url = "wss://portal.example.org"
ip = "0.0.0.0"
port = 8040
servers = []

[[service.clients]]
name = "bridge"
zone = "default"
ip = {{ IP = "10.1.2.3" }}
inner_key = {{ data = "{K1}" }}
outer_key = {{ data = "{K2}" }}
"""
    cfg = ServiceConfig.loads(text)
    (bridge,) = cfg.clients
    assert bridge.name == "bridge"
    assert bridge.ip.matches(ipaddress.ip_address("10.1.2.3"))
    assert not bridge.ip.matches(ipaddress.ip_address("10.1.2.4"))
    assert cfg.servers == ()


def test_rust_subtable_key_form_loads() -> None:
    text = f"""
[service]
name = "portal"
url = "ws://localhost:8040"
ip = "127.0.0.1"
port = 8040
clients = []

[[service.servers]]
name = "up"
url = "ws://up:1/"

[service.servers.inner_key]
data = "{K1}"

[service.servers.outer_key]
data = "{K2}"
"""
    cfg = ServiceConfig.loads(text)
    assert _entry_keys(cfg.servers[0]) == (K1, K2)
    assert cfg.url == "ws://localhost:8040/"


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = ServiceConfig.loads(REFERENCE_CONFIG)
    path = tmp_path / "sub" / "cluster-config.toml"
    cfg.save(path)
    again = ServiceConfig.load(path)
    assert again == cfg
    assert again.servers == cfg.servers and again.clients == cfg.clients
    assert ServiceConfig.loads(cfg.dumps()) == cfg
    # Saving twice gives the same document.
    assert again.dumps() == cfg.dumps()


def test_written_layout_is_the_reference_one(tmp_path: Path) -> None:
    cfg = ServiceConfig.loads(REFERENCE_CONFIG)
    path = tmp_path / "c.toml"
    cfg.save(path)
    document = tomllib.loads(path.read_text())
    service = document["service"]
    assert service["heathcheck_port"] == 8081  # the reference's misspelt key
    assert "healthcheck_port" not in service
    assert service["proxy_header"] == "X-Real-IP"
    assert service["encryption"] == {"Environment": {"key": "OPENPORTAL_CONFIG_PASSWORD"}}
    assert service["servers"][0] == {
        "name": "clusters",
        "url": "ws://platform.internal:8045/",
        "zone": "default",
        "inner_key": {"data": K1},
        "outer_key": {"data": K2},
    }
    assert service["clients"][0]["ip"] == {"IP": "10.0.0.7"}
    assert service["clients"][1]["ip"] == {"Range": "10.1.2.0/24"}
    assert set(service) >= {"name", "url", "ip", "port", "servers", "clients"}


def test_empty_peer_lists_are_written(tmp_path: Path) -> None:
    # servers / clients are REQUIRED by the reference, so they must be written even when empty.
    cfg = ServiceConfig.create("portal", port=8040)
    document = tomllib.loads(cfg.dumps())
    assert document["service"]["servers"] == []
    assert document["service"]["clients"] == []
    assert "heathcheck_port" not in document["service"]
    assert "encryption" not in document["service"]
    path = tmp_path / "p.toml"
    cfg.save(path)
    assert ServiceConfig.load(path) == cfg


def test_simple_encryption_round_trip() -> None:
    cfg = ServiceConfig(name="portal", url="ws://h:1/", encryption=SimpleEncryption())
    assert tomllib.loads(cfg.dumps())["service"]["encryption"] == {"Simple": {}}
    assert ServiceConfig.loads(cfg.dumps()).encryption == SimpleEncryption()
    text = cfg.dumps().replace("[service.encryption.Simple]", "[service.encryption.Simple]\n")
    assert ServiceConfig.loads(text).encryption == SimpleEncryption()


def test_extra_top_level_keys_ignored() -> None:
    text = REFERENCE_CONFIG + '\n[quota_engines.home]\ntype = "fake"\n'
    assert ServiceConfig.loads(text) == ServiceConfig.loads(REFERENCE_CONFIG)


def test_a_document_without_a_service_table() -> None:
    # Unreadable files and invalid TOML: see test_files.py.
    with pytest.raises(ConfigError, match=r"\[service\]"):
        ServiceConfig.loads('agent = "Instance"')
    with pytest.raises(ConfigError):
        ServiceConfig.loads('service = "x"')


# --- validation rules ----------------------------------------------------------------------


def _service(**overrides: Any) -> dict[str, Any]:
    return table(SERVICE, **overrides)


def _client(**overrides: Any) -> dict[str, Any]:
    return table(CLIENT, **overrides)


def _server(**overrides: Any) -> dict[str, Any]:
    return table(SERVER, **overrides)


@pytest.mark.parametrize("missing", ["name", "url", "ip", "port", "servers", "clients"])
def test_section_required_keys(missing: str) -> None:
    service = _service()
    del service[missing]
    with pytest.raises(ConfigError, match=missing):
        load_service(service)


@pytest.mark.parametrize("missing", ["name", "ip", "inner_key", "outer_key"])
def test_client_required_keys(missing: str) -> None:
    client = _client()
    del client[missing]
    with pytest.raises(ConfigError, match=missing):
        load_service(_service(clients=[client]))


@pytest.mark.parametrize("missing", ["name", "url", "inner_key", "outer_key"])
def test_server_required_keys(missing: str) -> None:
    server = _server()
    del server[missing]
    with pytest.raises(ConfigError, match=missing):
        load_service(_service(servers=[server]))


def test_zone_is_optional_and_defaults() -> None:
    cfg = load_service(_service(clients=[_client(zone=None)], servers=[_server(zone=None)]))
    assert cfg.clients[0].zone == "default"
    assert cfg.servers[0].zone == "default"


@pytest.mark.parametrize("name", ["a", "portal", "my-agent_2", "Ünïcödé", "数据", " trimmed "])
def test_good_names(name: str) -> None:
    cfg = load_service(
        _service(name=name, clients=[_client(name=name)], servers=[_server(name=name)])
    )
    assert cfg.name == name.strip()
    assert cfg.clients[0].name == name.strip()
    assert cfg.servers[0].name == name.strip()


@pytest.mark.parametrize(
    "name", ["", "   ", "a.b", "a b", "a@b", "a/b", "a<b", "a>b", "a:b", "a\tb", "é!", 5, True]
)
def test_bad_names(name: Any) -> None:
    for service in (
        _service(name=name),
        _service(clients=[_client(name=name)]),
        _service(servers=[_server(name=name)]),
    ):
        with pytest.raises(ConfigError):
            load_service(service)


@pytest.mark.parametrize("zone", ["default", "a-b_c", "remote>local", "x<y", "Zöne1"])
def test_good_zones(zone: str) -> None:
    cfg = load_service(_service(clients=[_client(zone=zone)], servers=[_server(zone=zone)]))
    assert cfg.clients[0].zone == zone
    assert cfg.servers[0].zone == zone


@pytest.mark.parametrize("zone", ["", " ", "a.b", "a b", "a@b", "a/b", 7, ["default"]])
def test_bad_zones(zone: Any) -> None:
    with pytest.raises(ConfigError):
        load_service(_service(clients=[_client(zone=zone)]))
    with pytest.raises(ConfigError):
        load_service(_service(servers=[_server(zone=zone)]))


def test_duplicate_peers_rejected() -> None:
    with pytest.raises(ConfigError, match="bridge@default"):
        load_service(_service(clients=[_client(), _client(ip={"IP": "10.9.9.9"})]))
    with pytest.raises(ConfigError, match="up@default"):
        load_service(_service(servers=[_server(), _server(url="ws://elsewhere:1/")]))
    # Trimmed names collide too.
    with pytest.raises(ConfigError):
        load_service(_service(clients=[_client(), _client(name=" bridge ")]))
    # The same name in two zones, or as both client and server, is fine.
    cfg = load_service(
        _service(
            clients=[_client(), _client(zone="other")],
            servers=[_server(name="bridge")],
        )
    )
    assert [c.peer for c in cfg.clients] == ["bridge@default", "bridge@other"]
    with pytest.raises(ConfigError, match="zone"):
        cfg.client("bridge")
    assert cfg.client("bridge", "other") is cfg.clients[1]
    assert cfg.client("nobody") is None


def test_duplicate_rejected_when_constructed_directly() -> None:
    entry = ClientEntry.from_toml(_client())
    with pytest.raises(ConfigError):
        ServiceConfig(name="p", url="ws://h:1/", clients=(entry, entry))


def test_bare_hex_key_gives_helpful_error() -> None:
    with pytest.raises(ConfigError, match=r"data = "):
        load_service(_service(clients=[_client(inner_key=K1)]))
    with pytest.raises(ConfigError, match=r"data = "):
        load_service(_service(servers=[_server(outer_key=K2)]))


@pytest.mark.parametrize(
    "key",
    [
        {"data": "00" * 32},
        {"data": K1[:-2]},
        {"data": "xy" * 32},
        {"data": K1, "extra": "1"},
        {},
        [K1],
        5,
    ],
)
def test_bad_keys_rejected(key: Any) -> None:
    with pytest.raises(ConfigError):
        load_service(_service(clients=[_client(outer_key=key)]))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", -1),
        ("port", 65536),
        ("port", "8040"),
        ("port", True),
        ("port", 1.5),
        ("ip", "localhost"),
        ("ip", "10.0.0.0/24"),
        ("ip", 10),
        ("url", ""),
        ("url", 5),
        ("heathcheck_port", "8081"),
        ("heathcheck_port", False),
        ("proxy_header", 5),
        ("servers", {"name": "x"}),
        ("clients", "none"),
        ("encryption", {"Bogus": {}}),
        ("encryption", {"Environment": {}}),
        ("encryption", "Simple"),
        ("zone", "a.b"),
    ],
)
def test_bad_section_fields(field: str, value: Any) -> None:
    with pytest.raises(ConfigError):
        load_service(_service(**{field: value}))


def test_ipv6_listen_address() -> None:
    cfg = load_service(_service(ip="::1", url="ws://[::1]:8040"))
    assert cfg.ip == "::1"
    assert cfg.url == "ws://[::1]:8040/"


# --- IP allowlists ------------------------------------------------------------------------


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_ip_allow_exact() -> None:
    allow = IpAllow.from_toml({"IP": "10.0.0.7"})
    assert not allow.is_range
    assert allow.matches(_ip("10.0.0.7"))
    assert not allow.matches(_ip("10.0.0.8"))
    assert not allow.matches(_ip("10.0.0.6"))
    assert allow.to_toml() == {"IP": "10.0.0.7"}


def test_ip_allow_range() -> None:
    allow = IpAllow.from_toml({"Range": "10.1.2.0/24"})
    assert allow.is_range
    for host in ("10.1.2.0", "10.1.2.1", "10.1.2.255"):
        assert allow.matches(_ip(host))
    for host in ("10.1.3.0", "10.1.1.255", "11.1.2.1"):
        assert not allow.matches(_ip(host))
    assert allow.to_toml() == {"Range": "10.1.2.0/24"}
    # Host bits are accepted and normalised, like ipnet's trunc.
    assert IpAllow.from_toml({"Range": "10.1.2.77/24"}).to_toml() == {"Range": "10.1.2.0/24"}


def test_ip_allow_ipv4_mapped_ipv6() -> None:
    exact = IpAllow.from_toml({"IP": "10.0.0.7"})
    rng = IpAllow.from_toml({"Range": "10.1.2.0/24"})
    assert exact.matches(_ip("::ffff:10.0.0.7"))
    assert not exact.matches(_ip("::ffff:10.0.0.8"))
    assert rng.matches(_ip("::ffff:10.1.2.200"))
    assert not rng.matches(_ip("::ffff:10.1.3.1"))


def test_ip_allow_ipv6() -> None:
    allow = IpAllow.from_toml({"IP": "2001:db8::1"})
    assert allow.matches(_ip("2001:db8::1"))
    assert not allow.matches(_ip("2001:db8::2"))
    assert not allow.matches(_ip("10.0.0.1"))
    assert allow.to_toml() == {"IP": "2001:db8::1"}
    v4 = IpAllow.from_toml({"IP": "127.0.0.1"})
    assert not v4.matches(_ip("::1"))
    rng6 = IpAllow.from_toml({"Range": "2001:db8::/32"})
    assert rng6.matches(_ip("2001:db8:ffff::1"))
    assert not rng6.matches(_ip("2001:db9::1"))


@pytest.mark.parametrize(
    "value",
    [
        {"IP": "10.0.0.0/24"},  # a range under the IP tag
        {"Range": "10.0.0.7"},  # an address under the Range tag
        {"Cidr": "10.0.0.0/24"},
        {"ip": "10.0.0.7"},
        {"IP": "10.0.0.7", "Range": "10.0.0.0/24"},
        {},
        {"IP": 10},
        {"IP": "not-an-ip"},
        {"Range": "10.0.0.0/33"},
        {"IP": ""},
        "10.0.0.7",
        ["10.0.0.7"],
    ],
)
def test_ip_allow_rejects(value: Any) -> None:
    with pytest.raises(ConfigError):
        IpAllow.from_toml(value)
    with pytest.raises(ConfigError):
        load_service(_service(clients=[_client(ip=value)]))


def test_ip_tag_mismatch_message() -> None:
    with pytest.raises(ConfigError, match="Range"):
        IpAllow.from_toml({"IP": "10.0.0.0/24"})


# --- building configs in code ----------------------------------------------------------------


def test_create_defaults() -> None:
    cfg = ServiceConfig.create("portal")
    assert (cfg.name, cfg.url, cfg.ip, cfg.port) == (
        "portal",
        "ws://127.0.0.1:8040/",
        "127.0.0.1",
        8040,
    )
    assert ServiceConfig.create("x", ip="::1", port=9).url == "ws://[::1]:9/"
    assert ServiceConfig.create("x", url="https://h/op/").url == "wss://h"
    with pytest.raises(ConfigError):
        ServiceConfig.create("bad name")


def test_with_and_without_peers() -> None:
    cfg = ServiceConfig.create("portal")
    c1 = ClientEntry.from_toml(_client())
    c1b = ClientEntry.from_toml(_client(ip={"IP": "10.9.9.9"}))
    c2 = ClientEntry.from_toml(_client(zone="z2"))
    cfg = cfg.with_client(c1).with_client(c2).with_client(c1b)
    assert cfg.clients == (c2, c1b)
    assert cfg.without_client("bridge", "z2").clients == (c1b,)
    invite = Invite.from_dict(_server(url="https://up.example.org/x"))
    server = ServerEntry.from_invite(invite)
    assert server.inner_key == Key.from_hex(K3) and server.outer_key == Key.from_hex(K4)
    assert server.url == "wss://up.example.org"
    cfg = cfg.with_server(server)
    assert cfg.server("up") == server
    assert cfg.without_server("up", "default").servers == ()
    assert ServiceConfig.loads(cfg.dumps()) == cfg


# --- fuzzing ---------------------------------------------------------------------------------

_names = mostly(
    st.sampled_from(["portal", "bridge", "a_b-c", " x ", "ünï", "n1", "n2"]),
    st.one_of(st.sampled_from(["", "a.b", "a>b", " "]), values),
)
_zones = mostly(
    st.sampled_from(["default", "remote>local", "z", "x<y"]),
    st.one_of(st.sampled_from(["", "a b", "a.b"]), values),
)
_ips = mostly(
    st.one_of(
        st.ip_addresses().map(lambda a: {"IP": str(a)}),
        st.builds(lambda a, p: {"Range": f"{a}/{p}"}, st.ip_addresses(v=4), st.integers(0, 32)),
    ),
    st.one_of(
        st.builds(
            lambda t, a: {t: a},
            st.sampled_from(["IP", "Range", "Cidr"]),
            st.one_of(
                st.ip_addresses().map(str),
                st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(), st.integers(0, 200)),
                st.text(max_size=15),
            ),
        ),
        values,
    ),
)
_urls = mostly(
    st.one_of(
        st.sampled_from(
            [
                "ws://h:8040/",
                "https://h/op/",
                "http://[::1]:81/x",
                "ftp://x",
                "h",
                "wss://user@h:444/p?q#f",
                "HTTP://Host.Example:80/dropped",
            ]
        ),
        st.builds(
            lambda scheme, host, port, path: f"{scheme}://{host}:{port}{path}",
            st.sampled_from(["ws", "wss", "http", "https", "other"]),
            st.from_regex(r"[a-z0-9.-]{1,12}", fullmatch=True),
            st.integers(0, 65535),
            st.from_regex(r"(/[a-z0-9]{0,5}){0,3}", fullmatch=True),
        ),
    ),
    st.one_of(
        st.sampled_from(["", "ws://:80", "http://[::1", "http://h:99999/", "http://h:-1/"]),
        st.text(max_size=30),
        values,
    ),
)
_ports = mostly(st.integers(0, 65535), st.one_of(st.integers(-5, 70_000), values))
_encryptions = mostly(
    st.one_of(
        st.just({"Simple": {}}),
        st.from_regex(r"[A-Z_]{0,10}", fullmatch=True).map(lambda k: {"Environment": {"key": k}}),
    ),
    st.one_of(
        st.builds(lambda k: {"Environment": {"key": k}}, values),
        st.dictionaries(st.sampled_from(["Simple", "Environment", "Other"]), values, max_size=2),
        values,
    ),
)


_client_tables = mostly(
    tables({"name": _names, "zone": _zones, "ip": _ips, "inner_key": keys, "outer_key": keys}),
    values,
)
_server_tables = mostly(
    tables({"name": _names, "url": _urls, "zone": _zones, "inner_key": keys, "outer_key": keys}),
    values,
)


@st.composite
def _config_documents(draw: st.DrawFn) -> dict[str, Any]:
    required = {
        "name": _names,
        "url": _urls,
        "ip": mostly(st.ip_addresses().map(str), values),
        "port": _ports,
        "servers": st.lists(_server_tables, max_size=3),
        "clients": st.lists(_client_tables, max_size=3),
    }
    optional = {
        "heathcheck_port": _ports,
        "proxy_header": mostly(st.just("X-Real-IP"), values),
        "encryption": _encryptions,
        "zone": _zones,
        "unknown_key": values,
    }
    document: dict[str, Any] = {"agent": "Instance", "service": draw(tables(required, optional))}
    if draw(st.booleans()):
        document["extras"] = draw(st.dictionaries(st.text(max_size=5), values, max_size=2))
    return document


def _loads_or_config_error(text: str) -> ServiceConfig | None:
    try:
        return ServiceConfig.loads(text)
    except ConfigError:
        return None


@FUZZ
@given(st.text(max_size=500))
def test_fuzz_arbitrary_text(text: str) -> None:
    _loads_or_config_error(text)


@FUZZ
@given(
    st.lists(
        st.sampled_from(
            [
                "[service]",
                "\n",
                "name = ",
                '"x"',
                "[[service.clients]]",
                "ip = ",
                "{ IP = ",
                "}",
                "[",
                "]",
                "=",
                "port = 1",
                "servers = []",
                "clients = []",
                "inner_key = ",
                '{ data = "',
                "aa" * 32,
                '" }',
                "x",
                ",",
                "[[service.servers]]",
                "url = ",
            ]
        ),
        max_size=40,
    ).map("".join)
)
def test_fuzz_toml_fragments(text: str) -> None:
    _loads_or_config_error(text)


@settings(FUZZ, max_examples=200)
@given(_config_documents())
def test_fuzz_structured_documents(document: dict[str, Any]) -> None:
    text = tomli_w.dumps(document)
    cfg = _loads_or_config_error(text)
    urls = [cfg.url, *(s.url for s in cfg.servers)] if cfg is not None else []
    # Skip the round trip for URLs hitting the known canonicalisation gap (see test_urls.py).
    if cfg is not None and all(c.isprintable() and not c.isspace() for u in urls for c in u):
        # Whatever loads must survive a save/load cycle unchanged.
        assert ServiceConfig.loads(cfg.dumps()) == cfg
        assert ServiceConfig.loads(ServiceConfig.loads(cfg.dumps()).dumps()) == cfg
