"""docker-compose.yml: the structure a safe local set-up needs (no Docker engine here, so the
file is read, not run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def test_it_has_the_backing_services_and_a_trace_viewer() -> None:
    assert set(SERVICES) == {"redis", "postgres", "nats", "jaeger"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_health_check(name: str) -> None:
    check = SERVICES[name].get("healthcheck")
    assert check is not None and check.get("test"), name
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert not check.get("disable")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_port_is_published_on_loopback_only(name: str) -> None:
    for port in SERVICES[name].get("ports", []):
        if isinstance(port, dict):  # the long syntax
            assert port.get("host_ip") == "127.0.0.1", (name, port)
        else:
            assert str(port).startswith("127.0.0.1:"), (name, port)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_volume_is_a_named_one(name: str) -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for volume in SERVICES[name].get("volumes", []):
        source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
        assert source in declared, f"{name}: {volume} is not a named volume"


def test_stateful_services_keep_their_data_in_volumes() -> None:
    for name in ("redis", "postgres", "nats"):
        assert SERVICES[name].get("volumes"), name


def test_postgres_needs_a_password_and_never_trusts() -> None:
    env = SERVICES["postgres"]["environment"]
    password = env["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD") and ":?" in password  # required, no default
    assert env.get("POSTGRES_HOST_AUTH_METHOD", "scram-sha-256") != "trust"
    assert "trust" not in str(env.get("POSTGRES_INITDB_ARGS", ""))
    example = (REPO / ".env.example").read_text()
    assert any(line.startswith("POSTGRES_PASSWORD=") for line in example.splitlines())
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_nats_runs_jetstream_with_its_store_on_a_volume() -> None:
    command = SERVICES["nats"]["command"]
    assert "-js" in command
    store = command[command.index("-sd") + 1]
    assert any(str(v).split(":")[1] == store for v in SERVICES["nats"]["volumes"])


def test_jaeger_takes_otlp() -> None:
    jaeger = SERVICES["jaeger"]
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert any(str(p).endswith(":4318") for p in jaeger["ports"])
