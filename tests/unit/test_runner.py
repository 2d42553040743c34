import time

import pytest

from leakcheck import config
from leakcheck.errors import ProbeSkipped, UsageError
from leakcheck.netstate import NetState
from leakcheck.oracle import Oracle
from leakcheck.probe import Probe, ProbeContext, Severity, validate_probe
from leakcheck.registry import discover, select
from leakcheck.report import Status
from leakcheck.runner import run_one
from leakcheck.tunnel import Tunnel


def ctx(is_root=True, disruptive=False):
    tunnel = Tunnel("absent", "none", ())
    state = NetState()
    return ProbeContext(config=config.defaults(), state=state, tunnel=tunnel, oracle=Oracle(state, tunnel),
                        is_root=is_root, disruptive=disruptive)


class Base(Probe):
    """A test probe."""
    name = "fake"
    leak_class = "testing"
    finding_ids = ("fake.found",)


class Boom(Base):
    """Raises."""
    def run(self, c):
        raise RuntimeError("netlink went away")


class Slow(Base):
    """Never finishes in time."""
    timeout_s = 0.2

    def run(self, c):
        time.sleep(5)
        return []


class Skips(Base):
    """Cannot run here."""
    def run(self, c):
        raise ProbeSkipped("no tunnel")


class Finds(Base):
    """Finds a leak."""
    def run(self, c):
        return [self.finding("fake.found", Severity.HIGH, "s", {}, "r", "g")]


class Undeclared(Base):
    """Uses an id it did not declare."""
    def run(self, c):
        return [self.finding("fake.other", Severity.HIGH, "s", {}, "r", "g")]


class RootOnly(Finds):
    """Needs root."""
    needs_root = True


class Cuts(Finds):
    """Disruptive."""
    disruptive = True


def test_exception_becomes_error_with_message():
    result = run_one(Boom, ctx())
    assert result.status is Status.ERROR and "netlink went away" in result.error


def test_timeout_becomes_error_and_returns_promptly():
    started = time.monotonic()
    result = run_one(Slow, ctx())
    assert result.status is Status.ERROR and result.error == "did not finish within 0.2 s"
    assert time.monotonic() - started < 2


def test_skip_carries_its_reason():
    result = run_one(Skips, ctx())
    assert result.status is Status.SKIP
    assert result.findings[0].id == "fake.skipped" and result.findings[0].evidence["reason"] == "no tunnel"


def test_findings_set_the_status():
    assert run_one(Finds, ctx()).status is Status.LEAK


def test_undeclared_finding_id_is_an_error():
    assert run_one(Undeclared, ctx()).status is Status.ERROR


def test_root_and_disruptive_gates():
    assert "not privileged" in run_one(RootOnly, ctx(is_root=False)).findings[0].evidence["reason"]
    assert run_one(RootOnly, ctx(is_root=True)).status is Status.LEAK
    assert "disruptive" in run_one(Cuts, ctx()).findings[0].evidence["reason"]
    assert run_one(Cuts, ctx(disruptive=True)).status is Status.LEAK


@pytest.mark.parametrize("attr, value, message", [
    ("name", "Bad Name", "kebab"), ("leak_class", "", "leak_class"), ("finding_ids", (), "finding_ids"),
    ("finding_ids", ("other.id",), "must start with"), ("checks", ("no-such-advice",), "recommendation keys"),
])
def test_probe_metadata_is_checked_at_load(attr, value, message):
    broken = type("Broken", (Finds,), {attr: value, "__doc__": "doc"})
    with pytest.raises(TypeError, match=message):
        validate_probe(broken)


def test_builtin_probes_are_discovered_and_valid():
    found = discover()
    assert {"routes", "split", "dns", "ipv6"} <= set(found)
    assert [p.name for p in select(found, ["dns", "routes"])] == ["dns", "routes"]
    with pytest.raises(UsageError, match="unknown probe nope"):
        select(found, ["nope"])


def test_capabilities_are_read_from_proc_status(tmp_path):
    from leakcheck import privileges
    status = tmp_path / "status"
    status.write_text("Name:\tpython3\nCapEff:\t0000000000003000\n")  # NET_ADMIN + NET_RAW
    mask = privileges.effective_capabilities(status)
    assert privileges.has(privileges.CAP_NET_ADMIN, mask) and privileges.has(privileges.CAP_NET_RAW, mask)
    status.write_text("CapEff:\t0000000000001000\n")
    assert not privileges.has(privileges.CAP_NET_RAW, privileges.effective_capabilities(status))


def test_active_checks_need_an_interface_to_watch():
    from leakcheck.active import Probe as Packet
    assert ctx(is_root=True).observe([Packet("udp", "192.0.2.1", 9)]) is None  # loopback only


class Checks(Finds):
    """Checks two recommendations."""
    checks = ("forced", "autoconnect")


def test_checked_recommendations_travel_with_every_result():
    validate_probe(Checks)
    assert run_one(Checks, ctx()).to_dict()["checks"] == ["forced", "autoconnect"]
    skipped = type("SkipsChecks", (Checks,), {"run": Skips.run, "__doc__": "skips"})
    assert run_one(skipped, ctx()).to_dict()["checks"] == ["forced", "autoconnect"]
    assert "checks" not in run_one(Finds, ctx()).to_dict()  # optional: absent when none declared
