"""Flower's login guard (autodep_celery.flower_guard): where it lets Flower listen, and how it
wraps the class the flower command instantiates (a stand-in module here; the integration test
runs the real Flower)."""

from __future__ import annotations

import dataclasses
import sys
import types
from typing import Any

import pytest

from autodep_celery import flower_guard
from autodep_celery.config import AuthSettings, Settings
from autodep_celery.listen import is_loopback

pytestmark = pytest.mark.unit

LOOP = flower_guard.LOOPBACK


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
        ("localhost", True), ("", False), ("0.0.0.0", False), ("::", False),
        ("10.1.2.3", False), ("example.org", False),
    ],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# (address, unix socket, login, allowed) -> address bound (None: refused), message expected
CASES = [
    ("", "", False, False, LOOP, True),  # Flower's default (every interface): loopback instead
    ("127.0.0.1", "", False, False, "127.0.0.1", False),
    ("localhost", "", False, False, "localhost", False),
    ("0.0.0.0", "", False, False, None, True),
    ("10.1.2.3", "", False, False, None, True),
    ("", "", True, False, "", False),  # a login: Flower's own default stands
    ("0.0.0.0", "", True, False, "0.0.0.0", False),
    ("0.0.0.0", "", False, True, "0.0.0.0", False),  # allowed explicitly
    ("", "", False, True, "", False),
    ("0.0.0.0", "/run/flower.sock", False, False, "0.0.0.0", False),  # a Unix socket: no TCP
]


@pytest.mark.parametrize(("address", "socket", "login", "allowed", "bound", "says"), CASES)
def test_decide(
    address: str, socket: str, login: bool, allowed: bool, bound: str | None, says: bool
) -> None:
    decision = flower_guard.decide(address, socket, login, allowed)
    assert decision.address == bound
    assert bool(decision.message) is says


def test_refusal_names_every_way_out() -> None:
    message = flower_guard.decide("0.0.0.0", "", False, False).message
    for part in ("'0.0.0.0'", "--address=127.0.0.1", "--basic_auth", "FLOWER_BASIC_AUTH",
                 "--auth", flower_guard.ALLOW_KEY, flower_guard.ALLOW_ENV):  # fmt: skip
        assert part in message, part


class FakeFlower:
    """What the guard relies on in flower.app.Flower: `options` and `start_http_server`."""

    def __init__(self, **options: Any) -> None:
        defaults = {"address": "", "unix_socket": "", "basic_auth": None, "auth": ""}
        self.options = types.SimpleNamespace(**{**defaults, **options})
        self.bound: str | None = None

    def start_http_server(self) -> int:
        self.bound = self.options.address
        return 5555


@pytest.fixture
def command(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("flower.command")
    module.Flower = FakeFlower  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flower.command", module)
    return module


def settings(allowed: bool = False) -> Settings:
    return dataclasses.replace(Settings(), auth=AuthSettings(allow_unauthenticated_flower=allowed))


def test_install_guards_the_class_the_command_builds(command: types.ModuleType) -> None:
    assert flower_guard.install(settings())
    guarded = command.Flower
    assert guarded is not FakeFlower and issubclass(guarded, FakeFlower)
    assert flower_guard.install(settings()) and command.Flower is guarded  # once only

    default = guarded()
    assert default.start_http_server() == 5555 and default.bound == LOOP
    with pytest.raises(SystemExit):
        guarded(address="0.0.0.0").start_http_server()
    with_login = guarded(address="0.0.0.0", basic_auth=["user:secret"])
    with_login.start_http_server()
    assert with_login.bound == "0.0.0.0"
    oauth = guarded(auth=".*@example.org")
    oauth.start_http_server()
    assert oauth.bound == ""


def test_allowed_leaves_flower_alone(command: types.ModuleType) -> None:
    flower_guard.install(settings(allowed=True))
    anywhere = command.Flower(address="0.0.0.0")
    anywhere.start_http_server()
    assert anywhere.bound == "0.0.0.0"


def test_nothing_to_guard_without_the_flower_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "flower.command", raising=False)
    assert flower_guard.install(settings()) is False
