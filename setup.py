"""Package discovery for setuptools (everything else is in pyproject.toml).

Every package under cramc/ is found automatically, so a new subpackage cannot be
left out of the wheel; cramc.lang is the one package whose files live elsewhere
(isa/, mapped in pyproject.toml's [tool.setuptools.package-dir]), which
pyproject.toml's own discovery cannot express.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["cramc", "cramc.*"]), "cramc.lang"])
