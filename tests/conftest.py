"""Shared pytest setup for every test directory.

The lab fixtures (`lab_session`, `lab`, the `scenario` marker) come from
tests/lab/fixtures.py; the lab is built only when a test asks for it.
"""

pytest_plugins = ["tests.lab.fixtures"]
