"""Security options from the config file and from `jetraft server` flags."""

from __future__ import annotations

import click
import pytest

from cli.server import _options
from natsd.auth import User
from natsd.config import ServerOptions, options_from_mapping
from natsd.permissions import Permissions, SubjectRule
from natsd.server import Server
from natsd.tls import TlsSettings, parse_tls


def _flags(**overrides: object) -> dict:
    names = ["port", "host", "server_name", "config_file", "logfile", "debug", "trace", "log_json",
             "jetstream", "store_dir", "max_payload", "max_pending", "max_control_line",
             "max_connections", "ping_interval", "max_pings_out", "write_deadline", "user",
             "password", "auth_token", "cluster_listen", "routes", "cluster_name",
             "cluster_advertise", "no_advertise", "no_implicit_routes", "tls", "tlscert", "tlskey",
             "tlscacert", "tlsverify"]
    flags: dict = dict.fromkeys(names)
    flags["debug_trace"] = False
    flags.update(overrides)
    return flags


def test_tls_users_and_limits_from_config() -> None:
    fields, unknown = options_from_mapping({
        "max_subscriptions": 10,
        "tls": {"cert_file": "c.pem", "key_file": "k.pem", "ca_file": "ca.pem", "verify": True, "timeout": 3},
        "authorization": {"timeout": 1, "users": [
            {"user": "a", "password": "p", "permissions": {"publish": {"deny": ["x"]}}}]},
        "cluster": {"port": 6222, "tls": {"cert_file": "rc.pem", "key_file": "rk.pem"}},
    })
    assert unknown == []
    assert fields["max_subscriptions"] == 10
    assert (fields["tls_cert"], fields["tls_key"], fields["tls_ca"], fields["tls_verify"],
            fields["tls_timeout_s"]) == ("c.pem", "k.pem", "ca.pem", True, 3.0)
    assert fields["auth_users"] == (User(name="a", password="p", permissions=Permissions(
        publish=SubjectRule(deny=("x",)))),)
    assert (fields["cluster_tls_cert"], fields["cluster_tls_key"]) == ("rc.pem", "rk.pem")


@pytest.mark.parametrize("bad", [
    {"tls": {"cert_file": "c.pem"}},  # no key
    {"tls": {"cert_file": "c.pem", "key_file": "k.pem", "verify": True}},  # verify without CA
    {"tls": {"cert_file": "c.pem", "key_file": "k.pem", "bogus": 1}},
    {"authorization": {"users": [{"user": "a"}]}},
    {"authorization": {"users": [{"user": "a", "password": "p", "permissions": {"publish": 5}}]}},
])
def test_bad_security_config_is_an_error(bad: dict) -> None:
    with pytest.raises(ValueError):
        options_from_mapping(bad)


def test_tls_flags() -> None:
    options, _ = _options(_flags(tls=True, tlscert="c.pem", tlskey="k.pem"))
    assert (options.tls_cert, options.tls_key, options.tls_verify) == ("c.pem", "k.pem", False)
    options, _ = _options(_flags(tlscert="c.pem", tlskey="k.pem", tlscacert="ca.pem", tlsverify=True))
    assert (options.tls_ca, options.tls_verify) == ("ca.pem", True)
    with pytest.raises(click.BadParameter):
        _options(_flags(tls=True, tlscert="c.pem"))
    with pytest.raises(click.BadParameter):
        _options(_flags(tlscert="c.pem", tlskey="k.pem", tlsverify=True))


def test_parse_tls_defaults() -> None:
    assert parse_tls({"cert_file": "c", "key_file": "k"}) == TlsSettings(cert_file="c", key_file="k")
    assert not TlsSettings().enabled
    for given, seconds in ((3, 3.0), (0.5, 0.5), ("2s", 2.0), ("500ms", 0.5), ("1m", 60.0)):
        assert parse_tls({"cert_file": "c", "key_file": "k", "timeout": given}).timeout_s == seconds
    with pytest.raises(ValueError):
        parse_tls({"cert_file": "c", "key_file": "k", "timeout": "soon"})


def test_server_auth_required_and_info() -> None:
    server = Server(ServerOptions(auth_users=(User(name="a", password="p"),)))
    assert server.auth_required and not server.auth.nonce_required
    assert server.new_nonce() == ""
    assert not Server(ServerOptions()).auth_required
    assert Server(ServerOptions(auth_token="t")).credentials_ok({"auth_token": "t"})


def test_no_auth_user_and_default_permissions_keys() -> None:
    fields, unknown = options_from_mapping({"no_auth_user": "g", "authorization": {
        "default_permissions": {"subscribe": ["a"]}, "users": [{"user": "g", "password": "p"}]}})
    assert unknown == [] and fields["no_auth_user"] == "g"
    assert fields["auth_default_permissions"] == Permissions(subscribe=SubjectRule(allow=("a",)))
    server = Server(ServerOptions(**fields))
    assert server.auth_required and not server.auth.advertised
