"""pytest fixtures for the lab (registered by tests/conftest.py).

`lab_session` (session scope) builds the isp and vpn namespaces once; if
this machine cannot (not root, wireguard-go missing, ...) every test that
uses it fails with the reason: the lab never skips.

`lab` (function scope) is the same `Lab`, its laptop reset to the test's
scenario, chosen (first match wins) by

- indirect parametrization:  @pytest.mark.parametrize("lab", ["def1+tunnelvision"], indirect=True)
- a marker:                  @pytest.mark.scenario("def1", "tunnelvision")
- nothing:                   "wg-quick", the correct full tunnel

A test may also call `lab.reset("ipsec+split")` itself. When a test fails,
its packet captures, the lab's state (addresses, routes, rules, policies,
WireGuard peers, resolv.conf) and the daemons' logs are kept under
tests/lab/captures/<test id>/ (gitignored).
"""

from __future__ import annotations

import os
import re
from typing import Iterator

import pytest

from tests.lab import linux
from tests.lab.scenarios import Scenario, ScenarioError
from tests.lab.topology import CAPTURES_DIR, Lab, LabError

_LABS: list[Lab] = []
_EARLY_NOTES: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(style, *faults): the lab scenario the `lab` fixture "
                                       "resets the laptop to (default: wg-quick)")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """If any lab test will run, give this process its private /run/wireguard now: it
    needs a process without threads, and tests that run before the lab's (a browser
    driver, a thread pool) may leave some behind. Failing here is not fatal: the
    lab then shares the machine's /run/wireguard and says so if that is busy."""
    if any("lab_session" in getattr(item, "fixturenames", ()) for item in items) and os.geteuid() == 0:
        try:
            linux.private_mounts()
        except OSError as exc:
            _EARLY_NOTES.append(f"could not isolate /run/wireguard at collection: {exc}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_lab_report_{report.when}", report)


def pytest_terminal_summary(terminalreporter) -> None:
    for note in _EARLY_NOTES:
        terminalreporter.write_line(f"leakcheck lab note: {note}")
    for lab in _LABS:
        times = lab.reset_seconds
        line = f"leakcheck lab {lab.tag}: built in {lab.build_seconds or 0:.2f}s"
        if times:
            line += (f", {len(times)} laptop resets, mean {sum(times) / len(times):.3f}s, "
                     f"max {max(times):.3f}s")
        terminalreporter.write_line(line)
        for note in lab.notes:
            terminalreporter.write_line(f"leakcheck lab note: {note}")


@pytest.fixture(scope="session")
def lab_session() -> Iterator[Lab]:
    """The lab's isp and vpn namespaces, built once per session; torn down at the end
    (and at exit, and on SIGTERM/SIGHUP)."""
    lab = Lab()
    problem = None
    try:
        lab.build()
    except LabError as exc:
        problem = str(exc)
    if problem is not None:
        lab.close()
        pytest.fail(f"the lab cannot be built on this machine: {problem}", pytrace=False)
    lab.install_exit_handlers()
    _LABS.append(lab)
    try:
        yield lab
    finally:
        lab.close()


def _scenario_of(request: pytest.FixtureRequest) -> Scenario:
    param = getattr(request, "param", None)
    if param is not None:
        return Scenario.parse(param)
    marker = request.node.get_closest_marker("scenario")
    if marker is not None:
        return Scenario.parse(tuple(marker.args) or None)
    return Scenario.parse(None)


@pytest.fixture
def lab(lab_session: Lab, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The lab with a fresh laptop in the test's scenario (see the module docstring)."""
    problem = None
    try:
        scenario = _scenario_of(request)
        lab_session.begin_test()
        lab_session.reset(scenario)
    except (ScenarioError, LabError) as exc:
        problem = str(exc)
    if problem is not None:
        keep = CAPTURES_DIR / _safe(request.node.nodeid)
        lab_session.end_test(keep_in=keep)
        pytest.fail(f"{problem} (lab state kept in {keep})", pytrace=False)
    yield lab_session
    failed = any(getattr(getattr(request.node, f"_lab_report_{when}", None), "failed", False)
                 for when in ("setup", "call"))
    lab_session.end_test(keep_in=CAPTURES_DIR / _safe(request.node.nodeid) if failed else None)


def _safe(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", nodeid.removeprefix("tests/lab/"))[:150]
