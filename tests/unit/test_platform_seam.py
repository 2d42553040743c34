"""The platform seam: one backend chosen from sys.platform, handed to the engine."""

from __future__ import annotations

import sys

import pytest

from leakcheck import cli, engine
from leakcheck import platform as platforms
from leakcheck.config import defaults
from leakcheck.netstate import NetState
from leakcheck.platform.linux import LinuxBackend
from leakcheck.platform.macos import MacBackend
from leakcheck.platform.windows import WindowsBackend


@pytest.mark.parametrize("name, backend", [("linux", LinuxBackend), ("darwin", MacBackend),
                                           ("win32", WindowsBackend)])
def test_backend_chosen_from_sys_platform(name: str, backend: type) -> None:
    assert isinstance(platforms.select(name), backend)


def test_this_machine_gets_the_linux_backend() -> None:
    assert platforms.select().name == "linux"


def test_unsupported_platform_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    monkeypatch.setattr(sys, "platform", "freebsd14")
    config = tmp_path / "leakcheck.toml"
    config.write_text("")
    status = cli.main(["run", "--config", str(config)])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "does not support this platform (freebsd14)" in err


def test_engine_uses_the_backend_it_is_handed() -> None:
    """No OS call at all: state, route decisions, privilege come from the backend."""

    class Empty:
        name = "empty"
        calls: list[str] = []

        def read_state(self) -> NetState:
            self.calls.append("read_state")
            return NetState()

        def route_lookup(self, state):
            self.calls.append("route_lookup")
            from leakcheck.platform.table_lookup import TableLookup
            return TableLookup(state)

        def privileged(self) -> bool:
            self.calls.append("privileged")
            return False

        def packets_unavailable(self):
            return "none here"

    backend = Empty()
    report = engine.run(defaults(), engine.RunOptions(probes=("routes", "dns")), backend=backend)
    assert backend.calls == ["read_state", "route_lookup", "privileged"]
    assert report.tunnel.state == "absent"
    assert {p.probe for p in report.probes} == {"routes", "dns"}



def test_psutil_activity_sees_this_process_socket() -> None:
    """The macOS/Windows socket reader is plain psutil: checked here on a real socket."""
    import os
    import socket

    from leakcheck.platform.activity import read_activity

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it fixes the peer
        port = sock.getsockname()[1]
        notes: list[str] = []
        activity = read_activity(notes)
    assert activity is not None and activity.socket_source == "psutil"
    mine = [s for s in activity.sockets if s.local_port == port and s.remote == "192.0.2.1"]
    assert len(mine) == 1 and mine[0].protocol == "udp" and mine[0].remote_port == 9
    assert os.getpid() in mine[0].pids
    assert activity.process(os.getpid()) is not None


def test_missing_routing_table_is_a_clear_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """A macOS machine whose netstat cannot run: exit 3 (a probe could not complete), one line."""
    from leakcheck.errors import NetStateError
    from leakcheck.platform.commands import RecordedRunner

    backend = MacBackend(RecordedRunner({}), read_activity=False, root=False)
    with pytest.raises(NetStateError, match="netstat -rn: not in the recording") as caught:
        engine.run(defaults(), engine.RunOptions(passive=True), backend=backend)
    assert int(caught.value.exit_code) == 3


@pytest.mark.parametrize("backend", [LinuxBackend(), MacBackend(), WindowsBackend()])
def test_every_backend_is_a_platform_backend(backend) -> None:
    assert isinstance(backend, platforms.Backend)
