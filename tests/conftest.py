"""Shared test fixtures: paths to the real data in ../shared/data (skipped when absent)."""

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def shared_data(relative):
    """Path of a folder of ../shared/data, or a skip naming what is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data {path} is absent (it lives in ../shared/data beside the project "
                    f"checkout, which a fresh clone does not have)")
    return path


@pytest.fixture
def market_mini():
    return shared_data("market1501_mini")


@pytest.fixture
def eval_reference():
    return shared_data("eval_reference")


@pytest.fixture
def cuhk01_dev():
    return shared_data("cuhk01_dev")


@pytest.fixture
def mars_mini():
    return shared_data("mars_mini")


@pytest.fixture(scope="session")
def mars_info():
    """The official MARS protocol arrays (tracks_*_info.mat, query_IDX.mat)."""
    return shared_data("eval_reference/mars_info")
