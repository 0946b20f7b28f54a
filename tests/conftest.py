"""Fixtures shared by every test file: tiny synthetic surveys in the Kaggle layout."""
from __future__ import annotations

from pathlib import Path

import pytest

# ~6 whales, ~40 train + ~13 test photos at 96x64. The heads are drawn larger than on
# Kaggle (bonnet-blowhead 10-22% of the width instead of 3.5-22%) so that they still
# span 10-20 pixels at this size; serial rendering skips the process-pool start-up.
TINY = dict(whales=6, seed=0, width=96, height=64, test_fraction=0.25, mean_photos=7.0,
            head_median=0.16, head_range=(0.1, 0.22), workers=1, progress=False)


@pytest.fixture(scope="session")
def tiny_survey(tmp_path_factory) -> Path:
    """One tiny survey for the whole session: treat it as read-only."""
    from rightwhale.io.synth import generate_survey  # imported on use: test_data fakes the module
    return generate_survey(tmp_path_factory.mktemp("tiny-survey") / "survey", **TINY)


@pytest.fixture(scope="session")
def make_survey(tmp_path_factory):
    """make_survey(**kwargs) -> Path: a fresh tiny survey (TINY overridden by kwargs) to modify at will."""
    def make(**kwargs) -> Path:
        from rightwhale.io.synth import generate_survey
        return generate_survey(tmp_path_factory.mktemp("survey") / "survey", **{**TINY, **kwargs})
    return make
