"""leakcheck: does any traffic escape the VPN tunnel? Answered with evidence."""

__version__ = "0.1.0"
