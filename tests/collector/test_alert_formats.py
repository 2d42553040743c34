"""Property tests for the alert wire formats and settings: whatever text an
event carries (hostnames, summaries, finding ids with |, =, \\, ], quotes,
newlines, non-ASCII), every RFC 5424 line and CEF line parses under the
strict parsers of alert_receivers.py and gives the values back; the
webhook signature verifies exactly its own body; the `[alerts]` table is
either accepted or refused with a ConfigError naming the key, never a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leakcheck.collector.alerts import events as ev
from leakcheck.collector.alerts import formats
from leakcheck.collector.alerts.config import FACILITIES, parse
from leakcheck.errors import ConfigError
from tests.collector.alert_receivers import parse_cef, parse_rfc5424

texts = st.text(max_size=80)
nasty = st.text(alphabet=st.sampled_from(list('|=\\]"[ \n\r\tab=xé中') + ["\u2028"]), max_size=40)


@st.composite
def events(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(ev.TYPES))
    details: dict[str, Any] = {"report_id": draw(texts)}
    if draw(st.booleans()):
        details["finding_ids"] = draw(st.lists(st.one_of(texts, nasty), min_size=1, max_size=4))
    if draw(st.booleans()):
        details["reconnect_s"] = draw(st.floats(min_value=0, max_value=1e6))
    device = {"id": draw(st.one_of(texts, nasty)), "hostname": draw(st.one_of(texts, nasty)), "os": "linux"}
    at = draw(st.floats(min_value=0, max_value=4e9))
    return ev.make(kind, at, device, draw(st.sampled_from(["info", "low", "medium", "high", "critical"])),
                   draw(st.one_of(texts, nasty)), details)


@settings(max_examples=300, deadline=None)
@given(events(), st.sampled_from(sorted(FACILITIES.values())), st.one_of(texts, nasty))
def test_every_rfc5424_line_parses_and_gives_the_values_back(event: dict[str, Any], facility: int, host: str) -> None:
    for fmt in ("rfc5424", "cef"):
        parsed = parse_rfc5424(formats.syslog_line(event, facility, host, fmt))
        assert parsed["facility"] == facility and parsed["version"] == 1
        assert parsed["msgid"] == event["type"]
        sd = parsed["sd"][formats.SD_ID]
        assert sd["id"] == event["id"] and sd["device"] == event["device"]["id"]
        assert sd["hostname"] == event["device"]["hostname"]
        if fmt == "rfc5424":
            assert json.loads(parsed["msg"]) == event
        else:
            assert parse_cef(parsed["msg"])["ext"]["externalId"] == event["id"]


@settings(max_examples=300, deadline=None)
@given(events())
def test_every_cef_line_parses_and_gives_the_values_back(event: dict[str, Any]) -> None:
    parsed = parse_cef(formats.cef_line(event))
    assert parsed["signature"] == event["type"]
    assert parsed["name"] == event["summary"].replace("\r", " ").replace("\n", " ")
    ext = parsed["ext"]
    assert ext["msg"] == event["summary"]
    assert ext["dvchost"] == event["device"]["hostname"]
    assert ext["deviceExternalId"] == event["device"]["id"]
    if event["details"].get("finding_ids"):
        assert ext["cs1"] == ",".join(event["details"]["finding_ids"])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500), st.binary(max_size=50), st.integers(min_value=0, max_value=2**33))
def test_a_signature_verifies_its_own_body_only(body: bytes, extra: bytes, stamp: int) -> None:
    secret = "s" * 32
    sig = formats.signature(secret, stamp, body)
    assert formats.verify(secret, str(stamp), sig, body, now=stamp)
    assert not formats.verify(secret, str(stamp), sig, body, now=stamp + formats.TOLERANCE_S + 1)
    assert not formats.verify("t" * 32, str(stamp), sig, body, now=stamp)
    if extra:
        assert not formats.verify(secret, str(stamp), sig, body + extra, now=stamp)


keys = st.sampled_from(["enabled", "batch_interval", "stale_intervals", "reconnect_bound", "max_batch",
                        "webhook", "jsonl", "syslog", "url", "secret_file", "address", "format", "facility",
                        "path", "name", "hostname", "bogus"])
values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), texts),
                      lambda inner: st.one_of(st.lists(inner, max_size=3),
                                              st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=5))
def test_any_alerts_table_is_accepted_or_refused_with_a_config_error(table: dict[str, Any]) -> None:
    try:
        parse(table)
    except ConfigError as exc:
        assert exc.key and exc.key.startswith("alerts")


def test_unknown_keys_and_bad_secrets_are_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.secret"
    short.write_text("too-short")
    good = tmp_path / "good.secret"
    good.write_text("g" * 20)
    cases = [({"bogus": 1}, "alerts.bogus"),
             ({"webhook": [{"url": "https://h.example/x", "secret_file": str(good), "colour": "red"}]},
              "alerts.webhook[0].colour"),
             ({"webhook": {"url": "ftp://h.example/x", "secret_file": str(good)}}, "alerts.webhook[0].url"),
             ({"syslog": {"address": "udp://h.example:514", "format": "leef"}}, "alerts.syslog[0].format"),
             ({"jsonl": {"path": "/x", "rotate": True}}, "alerts.jsonl.rotate")]
    for table, key in cases:
        with pytest.raises(ConfigError) as caught:
            parse(table)
        assert caught.value.key == key
    for table, key in (({"webhook": {"url": "https://h.example/x", "secret_file": "a\0b"}}, "secret_file"),
                       ({"webhook": {"url": "https://h.example:99999/x", "secret_file": str(good)}}, "url"),
                       ({"syslog": {"address": "udp://[::1:514"}}, "address")):
        with pytest.raises(ConfigError) as caught:
            parse(table)
        assert caught.value.key.endswith(key)
    with pytest.raises(ConfigError, match="at least 16"):
        parse({"webhook": {"url": "https://h.example/x", "secret_file": str(short)}})
    config = parse({"webhook": {"url": "https://h.example/x", "secret_file": str(good)},
                    "syslog": [{"address": "tcp://10.0.0.1:6514", "format": "cef", "facility": "local4"}]})
    assert config.enabled and [s.sink for s in config.sinks] == ["webhook:h.example", "syslog:10.0.0.1:6514"]
    assert config.webhooks[0].secret == "g" * 20


def test_the_syslog_parser_is_strict() -> None:
    """The parser the feed tests rely on refuses what RFC 5424 refuses."""
    good = b'<86>1 2026-12-02T10:00:00.000Z host leakcheck - leak-resolved [x@32473 a="1\\]"] msg'
    assert parse_rfc5424(good)["sd"] == {"x@32473": {"a": "1]"}}
    for bad in (b'<86>2026-12-02T10:00:00Z host app - id - m',                # no VERSION
                b'<192>1 2026-12-02T10:00:00Z host app - id - m',             # PRI > 191
                b'<86>1 2026-12-02 10:00:00 host app - id - m',              # not RFC 3339
                b'<86>1 - host app - id [x@1 a="]"] m',                      # unescaped ]
                b'<86>1 - host app - id [x@1 a=1] m',                        # unquoted value
                b'<86>1 - host app - id -m'):                               # no SP before MSG
        with pytest.raises(ValueError):
            parse_rfc5424(bad)
    with pytest.raises(ValueError):
        parse_cef("CEF:0|v|p|1|sig|name|11|")
    with pytest.raises(ValueError):
        parse_cef("CEF:0|v|p|1|sig|name|5|msg=a=b")


def test_the_settings_file_and_serve_options(tmp_path: Path) -> None:
    """`collector serve --config FILE` plus options build the [alerts] table;
    relative secret files are relative to the settings file; unknown tables fail."""
    from leakcheck.cli import build_parser
    from leakcheck.collector.alerts.cli import alerts_settings
    from leakcheck.collector.settings import Settings

    (tmp_path / "hook.secret").write_text("h" * 20)
    (tmp_path / "cli.secret").write_text("c" * 20)
    conf = tmp_path / "collector.toml"
    conf.write_text('[alerts]\nbatch_interval = 5\n[[alerts.webhook]]\nname = "soc"\n'
                    'url = "https://soc.example/hook"\nsecret_file = "hook.secret"\n')
    args = build_parser("collector").parse_args([
        "collector", "serve", "--config", str(conf), "--webhook", "http://127.0.0.1:9/h",
        "--webhook-secret-file", str(tmp_path / "cli.secret"), "--siem-syslog", "udp://127.0.0.1:514",
        "--siem-format", "cef", "--reconnect-bound", "12"])
    config = Settings(db=str(tmp_path / "c.sqlite3"), alerts=alerts_settings(args)).alert_config()
    assert [w.secret for w in config.webhooks] == ["h" * 20, "c" * 20]
    assert (config.batch_interval_s, config.reconnect_bound_s, config.syslogs[0].format) == (5.0, 12.0, "cef")
    conf.write_text("[alert]\n")
    with pytest.raises(ConfigError, match="alert: unknown key"):
        alerts_settings(build_parser("collector").parse_args(["collector", "serve", "--config", str(conf)]))


def test_state_changes_per_device() -> None:
    """The diff alone: new leak ids fire, repeats do not, gone ids resolve, an
    unknown document (not stored) never resolves, reconnect re-arms below the bound."""
    bounds = ev.Bounds(reconnect_s=10, stale_after_s=1800)
    at = 1_800_000_000.0

    def device(rid: str, verdict: str, reconnect: float | None = None) -> ev.Device:
        return ev.Device("d", "h", "linux", rid, verdict, at - 5, reconnect)

    def doc(*ids: str) -> dict[str, Any]:
        return {"probes": [{"probe": "dns", "status": "leak", "findings": [
            {"id": i, "severity": "high", "summary": i} for i in ids] + [
            {"id": "dns.note", "severity": "info", "summary": "note"}]}]}

    made, state = ev.changes(device("r1", "leak"), None, doc("dns.a"), bounds, at)
    assert [(e["type"], e["details"]["finding_ids"]) for e in made] == [("device-starts-leaking", ["dns.a"])]
    made, state = ev.changes(device("r2", "leak"), state, doc("dns.a", "dns.b"), bounds, at)
    assert [(e["type"], e["details"]["finding_ids"]) for e in made] == [("device-starts-leaking", ["dns.b"])]
    made, state = ev.changes(device("r3", "leak"), state, None, bounds, at)  # document not stored
    assert made == [] and state.leaking == ["dns.a", "dns.b"] and state.report_id == "r3"
    made, same = ev.changes(device("r3", "leak"), state, doc(), bounds, at)  # same report again
    assert made == []
    made, state = ev.changes(device("r4", "pass", reconnect=12), state, None, bounds, at)
    assert sorted((e["type"], e["details"].get("finding_ids")) for e in made) == [
        ("leak-resolved", ["dns.a", "dns.b"]), ("reconnect-slower-than-bound", None)]
    made, state = ev.changes(device("r5", "pass", reconnect=15), state, None, bounds, at)
    assert made == []  # still slow: already notified
    made, state = ev.changes(device("r6", "pass", reconnect=3), state, None, bounds, at)
    made, state = ev.changes(device("r7", "pass", reconnect=30), state, None, bounds, at)
    assert [e["type"] for e in made] == ["reconnect-slower-than-bound"]
