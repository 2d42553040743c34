"""Package list for setuptools; everything else is in pyproject.toml.

The probes/ folder stays at the top of the repository (one module per leak
class, easy to walk into) but installs as `leakcheck.probes`, so the wheel's
only top-level import package is `leakcheck`. pyproject.toml alone cannot say
"every leakcheck.* package found on disk plus this mapped one", hence this file.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["leakcheck", "leakcheck.*"]) + ["leakcheck.probes"],
    package_dir={"leakcheck.probes": "probes"},
    # the advisory table posture-updates ships with (leakcheck/advisories.py)
    package_data={"leakcheck": ["data/*.json"]},
)
