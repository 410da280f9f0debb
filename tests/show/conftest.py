"""The two units every show test draws: a 6.1 COW file with known writes, and one grown by
the 2.4 resize (built once per module; see guest.py)."""
from __future__ import annotations

import pytest

from tests.show.guest import make_resized, make_unit


@pytest.fixture(scope="module")
def unit(tmp_path_factory):
    directory = tmp_path_factory.mktemp("unit")
    make_unit(directory)
    return directory


@pytest.fixture(scope="module")
def resized(tmp_path_factory):
    directory = tmp_path_factory.mktemp("resized")
    make_resized(directory)
    return directory
