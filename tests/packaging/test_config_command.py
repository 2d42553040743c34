"""`leakcheck config default|check`: the documented default file is generated
from the schema (every key, its default, its meaning) and `check` validates a
file the way the agent reads it, printing the configuration in force."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from leakcheck import config as config_mod
from leakcheck.cli import main


def uncommented(text: str) -> str:
    """The default file with every `# key = value` line switched on."""
    return re.sub(r"^#(\w+ = )", r"\1", text, flags=re.M)


def test_default_file_documents_every_key_with_its_default() -> None:
    text = config_mod.render_default()
    for section, keys in config_mod.SCHEMA.items():
        assert f"[{section}]" in text
        for name, spec in keys.items():
            assert f"#{name} = {config_mod.toml_value(spec.default)}" in text, name
            first_words = " ".join(spec.doc.split()[:4])
            assert first_words in " ".join(line.lstrip("# ") for line in text.splitlines()), name


def test_default_file_is_valid_as_shipped_and_with_every_key_switched_on() -> None:
    text = config_mod.render_default()
    assert config_mod.from_mapping(tomllib.loads(text)).as_dict() == config_mod.defaults().as_dict()
    switched_on = tomllib.loads(uncommented(text))
    assert sum(len(v) for v in switched_on.values()) == sum(len(v) for v in config_mod.SCHEMA.values())
    assert config_mod.from_mapping(switched_on).as_dict() == config_mod.defaults().as_dict()


def test_config_default_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "default"]) == 0
    assert capsys.readouterr().out == config_mod.render_default()


def test_check_prints_effective_configuration_and_marks_changes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "leakcheck.toml"
    path.write_text('[agent]\ninterval = "5m"\n[policy]\nallowed_direct = ["192.0.2.0/24"]\n')
    assert main(["config", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"{path}: valid" in err
    assert 'interval = "5m"  # changed (default "15m")' in out
    assert 'jitter = "2m"\n' in out  # untouched keys shown with their defaults
    effective = tomllib.loads(out)
    assert effective["policy"]["allowed_direct"] == ["192.0.2.0/24"]
    assert config_mod.from_mapping(effective).as_dict() == config_mod.load(path).as_dict()


def test_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    path = tmp_path / "leakcheck.toml"
    path.write_text("[canaries]\nactive = false\n")
    assert main(["config", "check", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["canaries"]["active"] is False


@pytest.mark.parametrize("body, key", [
    ('[agent]\nintervall = "5m"\n', "agent.intervall"),
    ('[agent]\ninterval = "soon"\n', "agent.interval"),
    ("[policy]\nallowed_direct = [\"not-a-prefix\"]\n", "policy.allowed_direct"),
    ("[nosuch]\n", "nosuch"),
])
def test_check_rejects_bad_files_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                body: str, key: str) -> None:
    path = tmp_path / "leakcheck.toml"
    path.write_text(body)
    assert main(["config", "check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and key in err and str(path) in err


def test_check_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "absent.toml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_check_broken_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "leakcheck.toml"
    path.write_text("[agent\n")
    assert main(["config", "check", str(path)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_toml_value_round_trips() -> None:
    for value in (True, False, 0, 67108864, "", 'quote " and \\ back', ["a", "b"], []):
        assert tomllib.loads(f"k = {config_mod.toml_value(value)}")["k"] == value
