import pytest

from leakcheck import config
from leakcheck.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "leakcheck.toml"
    path.write_text(text)
    return path


def test_no_file_means_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    cfg = config.load(None)
    assert cfg.get("policy", "allow_split") is False
    assert cfg.get("canaries", "ipv4") == ["1.1.1.1", "8.8.8.8", "9.9.9.9"]


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.toml")


def test_values_are_validated_and_normalised(tmp_path):
    cfg = config.load(write(tmp_path, '[policy]\nallowed_direct = ["198.51.100.7/24"]\n'
                                      '[tunnel]\ninterfaces = ["wg*"]\n[agent]\ninterval = "30s"\n'))
    assert cfg.get("policy", "allowed_direct") == ["198.51.100.0/24"]
    assert cfg.tunnel_interface_matches("wg0") and not cfg.tunnel_interface_matches("eth0")


@pytest.mark.parametrize("text, key", [
    ("[policy]\nallow_splitt = true\n", "policy.allow_splitt"),
    ("[polcy]\nallow_split = true\n", "polcy"),
    ("[policy]\nallow_split = \"yes\"\n", "policy.allow_split"),
    ("[policy]\nallowed_direct = [\"not-a-prefix\"]\n", "policy.allowed_direct"),
    ("[canaries]\nipv4 = [\"2001:db8::1\"]\n", "canaries.ipv4"),
    ("[agent]\ninterval = \"soon\"\n", "agent.interval"),
    ("[collector]\nurl = \"ftp://x\"\n", "collector.url"),
    ("[tunnel]\ninterfaces = \"wg0\"\n", "tunnel.interfaces"),
])
def test_bad_keys_and_values_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, text))
    assert key in str(err.value)


def test_toml_syntax_error_names_the_file(tmp_path):
    path = write(tmp_path, "[policy\n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        config.load(path)
    assert str(path) in str(err.value)


def test_duration_parsing():
    assert config.parse_duration("15m") == 900
    assert config.parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        config.parse_duration("15 minutes")
