"""The runner: disruptive probes last whatever the list says, a deadline per
probe, a bounded run, and one probe's failure never costs the others' findings."""

from __future__ import annotations

import threading
import time

import pytest

from leakcheck import config
from leakcheck.netstate import NetState
from leakcheck.oracle import Oracle
from leakcheck.probe import Probe, ProbeContext, Severity, validate_probe
from leakcheck.registry import discover
from leakcheck.report import Status
from leakcheck.runner import DEFAULT_DEADLINE_S, MAX_ERROR_CHARS, deadline_of, ordered, run_all, run_one
from leakcheck.tunnel import Tunnel


def make_ctx(disruptive: bool = True) -> ProbeContext:
    tunnel = Tunnel("absent", "none", ())
    state = NetState()
    return ProbeContext(config=config.defaults(), state=state, tunnel=tunnel, oracle=Oracle(state, tunnel),
                        is_root=True, disruptive=disruptive)


def recording(name: str, *, disruptive: bool = False, passive_half: bool = False, sleep_s: float = 0.0,
              timeout_s: float = 5.0, raises: Exception | None = None, returns: object = None,
              log: list | None = None) -> type[Probe]:
    """A small probe class that notes when it ran (and what ctx.disruptive said)."""

    def run(self: Probe, ctx: ProbeContext) -> object:
        if log is not None:
            log.append((name, ctx.disruptive))
        time.sleep(sleep_s)
        if raises is not None:
            raise raises
        if returns is not None:
            return returns
        return [self.finding(f"{name}.found", Severity.HIGH, f"{name} found it", {"n": 1}, "fix", "g")]

    attrs = {"__doc__": f"Test probe {name}.", "name": name, "leak_class": "testing",
             "finding_ids": (f"{name}.found",), "disruptive": disruptive, "passive_half": passive_half,
             "timeout_s": timeout_s, "run": run}
    cls = type(name.title().replace("-", ""), (Probe,), attrs)
    validate_probe(cls)
    return cls


def test_disruptive_probes_run_after_every_other_whatever_the_list_position():
    log: list = []
    cut = recording("cut", disruptive=True, log=log)
    first = recording("first", log=log)
    plugin = recording("plugin", log=log)  # an entry-point probe comes after the built-ins
    results = run_all([first, cut, plugin], make_ctx())
    assert [name for name, _ in log] == ["first", "plugin", "cut"]
    assert [r.probe for r in results] == ["first", "plugin", "cut"]
    assert all(r.status is Status.LEAK for r in results)


def test_ordering_is_stable_and_puts_reconnect_after_third_party_probes():
    builtin = list(discover(include_entry_points=False).values())
    plugin = recording("vendor-check")
    order = [p.name for p in ordered(builtin + [plugin])]
    assert order[-1] == "reconnect"
    assert order[:-1] == [p.name for p in builtin if p.name != "reconnect"] + ["vendor-check"]


def test_a_disruptive_probe_with_a_passive_half_runs_without_consent_but_knows_it():
    log: list = []
    both = recording("both", disruptive=True, passive_half=True, log=log)
    only_cut = recording("only-cut", disruptive=True, log=log)
    results = {r.probe: r for r in run_all([both, only_cut], make_ctx(disruptive=False))}
    assert log == [("both", False)]
    assert results["both"].status is Status.LEAK
    assert results["only-cut"].status is Status.SKIP
    assert "disruptive test not enabled" in results["only-cut"].findings[0].evidence["reason"]


def test_an_overrunning_probe_is_an_error_and_the_run_moves_on():
    stuck = recording("stuck", sleep_s=3.0, timeout_s=0.2)
    after = recording("after")
    started = time.monotonic()
    results = {r.probe: r for r in run_all([stuck, after], make_ctx())}
    assert time.monotonic() - started < 1.5
    assert results["stuck"].status is Status.ERROR
    assert results["stuck"].error == "did not finish within 0.2 s"
    assert results["after"].status is Status.LEAK and results["after"].findings[0].id == "after.found"


def test_a_probe_that_raises_is_an_error_with_the_summary_and_the_others_still_find():
    boom = recording("boom", raises=AttributeError("'NoneType' object has no attribute 'id'"))
    fine = recording("fine")
    results = {r.probe: r for r in run_all([boom, fine], make_ctx())}
    assert results["boom"].status is Status.ERROR and results["boom"].findings == []
    assert results["boom"].error == "AttributeError: 'NoneType' object has no attribute 'id'"
    assert results["fine"].status is Status.LEAK and [f.id for f in results["fine"].findings] == ["fine.found"]


@pytest.mark.parametrize("returned, message", [
    ({"not": "a list"}, "returned dict, not a list of findings"),
    ([None], "returned a list holding NoneType, not a list of findings"),
])
def test_a_probe_returning_something_else_is_an_error_not_a_broken_report(returned, message):
    odd = recording("odd", returns=returned)
    result = run_one(odd, make_ctx())
    assert result.status is Status.ERROR and result.error == message
    result.to_dict()  # renders: the report can still be built


def test_a_huge_exception_message_is_cut_to_fit_the_report():
    loud = recording("loud", raises=RuntimeError("x" * 10_000))
    result = run_one(loud, make_ctx())
    assert result.status is Status.ERROR and len(result.error) == MAX_ERROR_CHARS
    assert result.error.startswith("RuntimeError: xxx")


def test_the_whole_run_is_bounded_by_its_budget():
    slow = [recording(f"slow-{i}", sleep_s=2.0, timeout_s=5.0) for i in range(3)]
    last = recording("last")
    started = time.monotonic()
    results = {r.probe: r for r in run_all([*slow, last], make_ctx(), budget_s=0.3)}
    took = time.monotonic() - started
    assert took < 1.0, took
    assert results["slow-0"].error == "did not finish within 0.3 s (what was left of the run's 0.3 s time budget)"
    assert results["last"].status is Status.ERROR
    assert results["last"].error == "not started: the run's 0.3 s time budget was spent"


def test_a_probe_finishing_just_in_time_keeps_its_findings():
    quick = recording("quick", sleep_s=0.05, timeout_s=2.0)
    assert run_one(quick, make_ctx()).status is Status.LEAK


def test_every_probe_has_a_deadline():
    plain = recording("plain")
    del plain.timeout_s  # inherits Probe's default
    assert deadline_of(plain) == DEFAULT_DEADLINE_S == 10.0
    for probe in discover(include_entry_points=False).values():
        assert 0 < deadline_of(probe) < float("inf")


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "10", True])
def test_a_nonsense_deadline_is_refused_at_load(bad):
    broken = type("Broken", (recording("broken"),), {"timeout_s": bad, "__doc__": "doc"})
    with pytest.raises(TypeError, match="timeout_s"):
        validate_probe(broken)


def test_abandoned_probe_threads_do_not_keep_the_process_alive():
    stuck = recording("forever", sleep_s=30.0, timeout_s=0.05)
    run_one(stuck, make_ctx())
    workers = [t for t in threading.enumerate() if t.name == "probe-forever"]
    assert workers and all(t.daemon for t in workers)
