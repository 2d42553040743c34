"""The CLI driven in-process: exit codes and messages for bad input."""

import pytest

from leakcheck import __version__
from leakcheck.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and __version__ in capsys.readouterr().out


def test_unknown_config_key_exits_2_naming_it(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[policy]\nallow_splitt = true\n")
    assert main(["run", "--config", str(path)]) == 2
    assert "policy.allow_splitt" in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "none.toml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_unknown_probe_exits_2(capsys):
    assert main(["run", "--probe", "nope"]) == 2
    assert "unknown probe nope" in capsys.readouterr().err


def test_unknown_option_exits_2():
    with pytest.raises(SystemExit) as done:
        main(["run", "--jsn"])
    assert done.value.code == 2


def test_probes_lists_every_builtin(capsys):
    assert main(["probes"]) == 0
    out = capsys.readouterr().out
    for name in ("routes", "split", "dns", "ipv6"):
        assert f"\n{name} " in "\n" + out
    assert "dns.resolver-outside-tunnel" in out


def test_unknown_trigger_exits_2():
    with pytest.raises(SystemExit) as done:
        main(["run", "--trigger", "whenever"])
    assert done.value.code == 2


def test_run_imports_no_other_command(monkeypatch):
    import importlib
    import leakcheck.cli as cli
    imported = []
    real = importlib.import_module
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: imported.append(name) or real(name))
    parser = cli.build_parser("run")
    assert imported == ["leakcheck.commands.run"]
    assert parser.parse_args(["run", "--json"]).json
    imported.clear()
    cli.build_parser(None)  # no command word (leakcheck --help): every command is listed
    assert len(imported) == len(cli.COMMANDS)


def test_help_without_a_command_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("run", "probes", "collector", "fleet", "config"))
