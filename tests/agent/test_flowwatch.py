"""The agent's flow batching (leakcheck.agent.flowwatch): a new flow waits at
most batch_s, updates of a sent flow are bounded to one per update_s with
the latest state, documents stay within the flows contract."""

from __future__ import annotations

import json
from typing import Any

from leakcheck.agent.flowwatch import FlowBatcher, documents
from leakcheck.flows import FlowsContract, problems
from tests.collector.flowdocs import flow

DEVICE = {"id": "dev-1", "hostname": "laptop-1", "os": "linux", "os_version": "Debian 12"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_new_flows_wait_at_most_the_batch_window() -> None:
    clock = Clock()
    batcher = FlowBatcher(batch_s=0.5, update_s=10, clock=clock)
    assert batcher.due_at() is None
    batcher.add(flow(dst="198.51.100.1"))
    clock.now += 0.3
    batcher.add(flow(dst="198.51.100.2"))
    assert batcher.due_at() == 100.5
    assert batcher.take() == ([], 0)
    clock.now = 100.5
    taken, updates = batcher.take()
    assert [f["evidence"]["dst"] for f in taken] == ["198.51.100.1", "198.51.100.2"] and updates == 0
    assert batcher.due_at() is None


def test_updates_are_rate_bounded_and_carry_the_latest_count() -> None:
    clock = Clock()
    batcher = FlowBatcher(batch_s=0.5, update_s=10, clock=clock)
    batcher.add(flow(count=1))
    clock.now += 0.5
    assert len(batcher.take()[0]) == 1
    for count in range(2, 200):
        clock.now += 0.01
        batcher.add(flow(count=count))
    assert batcher.take() == ([], 0)  # within update_s of the last send
    assert batcher.due_at() == 110.5
    # A new flow meanwhile goes out on its own schedule, without the held update.
    batcher.add(flow(dst="203.0.113.5"))
    clock.now += 0.5
    taken, updates = batcher.take()
    assert [f["evidence"]["dst"] for f in taken] == ["203.0.113.5"] and updates == 0
    clock.now = 110.5
    taken, updates = batcher.take()
    assert updates == 1 and [f["evidence"]["count"] for f in taken] == [199]


def test_force_takes_everything_pending() -> None:
    clock = Clock()
    batcher = FlowBatcher(batch_s=0.5, update_s=10, clock=clock)
    batcher.add(flow())
    clock.now += 1
    batcher.take()
    batcher.add(flow(count=5))
    batcher.add(flow(dst="203.0.113.9"))
    taken, updates = batcher.take(force=True)
    assert len(taken) == 2 and updates == 1


def test_documents_split_by_count_and_size_and_fit_the_contract() -> None:
    many = [flow(dst=f"198.51.{n // 200}.{n % 200}", dport=n % 65536) for n in range(250)]
    docs = documents(many, DEVICE, "0.1.0")
    assert [len(d["flows"]) for d in docs] == [100, 100, 50]
    big = [flow(dst=f"198.51.100.{n}", exe="/opt/" + "x" * 3900, cgroup="/" + "c" * 4000, command="y" * 2000)
           for n in range(100)]
    docs = documents(big, DEVICE, "0.1.0")
    assert sum(len(d["flows"]) for d in docs) == 100 and len(docs) > 1
    for doc in docs:
        assert len(json.dumps(doc)) <= FlowsContract.DOCUMENT_BYTES
        assert problems(doc) == []
        assert all(len(f["evidence"]["command"]) <= FlowsContract.COMMAND_MAX for f in doc["flows"])


def test_conformed_odd_text_is_accepted_by_the_collector_model() -> None:
    from leakcheck.collector.contract import FlowsIn

    odd: dict[str, Any] = flow(command="cu\x00rl\udcff", summary_extra="s" * 5000)
    odd["summary"] = "x" * 5000
    (doc,) = documents([odd], DEVICE, "0.1.0")
    FlowsIn.model_validate(json.loads(json.dumps(doc)))


def test_watch_key_is_validated_and_off_is_said(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from leakcheck import config as config_mod
    from leakcheck.agent.service import Agent
    from leakcheck.errors import ConfigError

    assert config_mod.defaults().get("agent", "watch") is True
    with pytest.raises(ConfigError, match="agent.watch"):
        config_mod.from_mapping({"agent": {"watch": "yes"}})
    with pytest.raises(ConfigError, match="agent.watches"):
        config_mod.from_mapping({"agent": {"watches": True}})
    config = config_mod.from_mapping({"agent": {"watch": False, "state_dir": str(tmp_path / "state")}})
    assert Agent(config)._start_watch() is None
    state = json.loads((tmp_path / "state" / "watch.json").read_text())
    assert (state["enabled"], state["state"], state["detail"]) == (False, "off", "agent.watch = false")


def test_whatever_the_watch_hands_over_the_collector_accepts_once_conformed() -> None:
    """Property: odd process names (NUL, lone surrogates from undecodable
    names), huge paths, out-of-range numbers and extra evidence are made to
    fit by the agent (leakcheck.flows.conform), never refused by the collector."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from leakcheck.collector.contract import FlowsIn

    texts = st.one_of(st.none(), st.text(max_size=50), st.text(min_size=4000, max_size=6000),
                      st.just("a\x00b"), st.just("/usr/bin/\udcff"))
    numbers = st.integers(min_value=-2**70, max_value=2**70)
    extra = st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=20000), numbers,
                                                            st.floats(allow_nan=True)), max_size=3)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(command=texts, exe=texts, cgroup=texts, dns=texts, sport=numbers, uid=numbers, count=numbers,
           summary=st.text(max_size=3000), extra=extra)
    def check(command, exe, cgroup, dns, sport, uid, count, summary, extra):  # type: ignore[no-untyped-def]
        odd = flow(command=command, exe=exe, cgroup=cgroup, dns_name=dns, **{f"x-{k}": v for k, v in extra.items()})
        odd["evidence"].update(sport=sport, uid=uid, count=max(count, 1) if count > 0 else 1)
        odd["summary"] = summary
        for doc in documents([odd], DEVICE, "0.1.0"):
            FlowsIn.model_validate(json.loads(json.dumps(doc)))

    check()
