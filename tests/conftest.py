"""Shared fixtures: paths to the project's examples and to ../shared/data."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHARED_DATA = ROOT.parent / "shared" / "data"
PROFILE_DATA = ROOT / "data" / "profiles"
"""measurements vendored in the repository (NOTICE): what the calibration profiles are fitted on"""


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, which every developer checkout and CI run has beside the project."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present: these tests read the real measurements there")
    return SHARED_DATA
