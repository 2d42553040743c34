"""Packaging tests: the .debs built, installed into a clean Debian root
(debootstrap), run there under the units' sandbox, removed and purged; the
systemd units verified; the launchd and Windows definitions parsed."""
