"""Declared floors are the tested versions, and a too-old dependency is named, not a traceback."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from llara import compat
from llara.errors import LlaraError

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_floors_are_the_pinned_floors():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for req in [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]:
        name, version = re.match(r"([A-Za-z0-9_\-]+)(?:\[[a-z,]+\])?>=([0-9.]+)(,<[0-9.]+)?(;.*)?$", req).groups()[:2]
        declared[name.lower()] = version
    pinned = {}
    for line in (ROOT / "constraints" / "floors.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.strip().lower()] = version.strip()
    assert declared == pinned


def test_capped_ranges_are_read_from_the_metadata():
    """The metadata writes a capped range cap first ("transformers<5.26,>=5.10.4"): floor and cap are
    both read (the tests run from an installed llara: README's test command installs it)."""
    assert {"torch", "transformers", "peft", "accelerate"} <= compat.floors().keys()
    assert {"transformers", "peft", "accelerate"} <= compat.caps().keys()
    assert compat.untested_training_versions() is None  # what the tests run is inside the range


def test_too_old_a_dependency_is_named(monkeypatch):
    monkeypatch.setattr(compat, "floors", lambda: {"transformers": "999.0"})
    with pytest.raises(LlaraError, match=r"llara needs transformers >= 999\.0, found \d"):
        compat.check_training_stack()


def test_a_missing_internal_names_the_package():
    class Trainerish:
        pass

    with pytest.raises(LlaraError, match=r"transformers .* has no Trainerish\._prepare_inputs"):
        compat.prepare_inputs(Trainerish(), {})
