"""Shared test fixtures: paths to the real data in ../shared/data (skipped when absent), the
listings of the original code's state_dicts (tests/<method>/original_state_dict*.txt) and a
2-process torchrun of a method's main.py."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
# The slow CLI tests write full-size ResNet-50 checkpoints: up to about 2 GiB in one test's folder.
SLOW_TESTS_FREE_GIB = 4


def pytest_collection_finish(session):
    """Stops a run that selects slow tests, with one line saying why, when the temporary folder's
    disk has less than SLOW_TESTS_FREE_GIB free (otherwise they fail midway with ENOSPC)."""
    if not any(item.get_closest_marker("slow") for item in session.items):
        return
    folder = Path(session.config.option.basetemp or tempfile.gettempdir()).resolve()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    free_gib = shutil.disk_usage(existing).free / 2**30
    if free_gib < SLOW_TESTS_FREE_GIB:
        pytest.exit(f"only {free_gib:.1f} GiB free under {folder}; the slow tests write full-size "
                    f"checkpoints and need {SLOW_TESTS_FREE_GIB} GiB: free space there or point "
                    f"TMPDIR (or --basetemp) at a bigger disk", returncode=1)


def shared_data(relative):
    """Path of a folder of ../shared/data, or a skip naming what is missing."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data {path} is absent (it lives in ../shared/data beside the project "
                    f"checkout, which a fresh clone does not have)")
    return path


@pytest.fixture
def torchrun(tmp_path):
    """``torchrun(method, *flags, port=..., timeout=300)`` runs ``<method>/main.py`` with
    ``flags`` in two CPU processes (gloo, one thread each) with ``tmp_path`` as the working
    folder, fails the test with the end of stderr if it fails, and returns the finished process."""
    def run(method, *flags, port, timeout=300):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                   "--master_port", str(port), str(PROJECT_ROOT / method / "main.py"),
                   *map(str, flags)]
        result = subprocess.run(command, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, result.stderr[-3000:]
        return result
    return run


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


def read_state_dict_listing(path):
    """``{name: shape}`` from a listing of the original code's state_dict: one ``name<TAB>shape``
    line per entry (shape as ``(64,3,7,7)``, ``(2048,)`` or ``()``), ``#`` lines being the header
    that says how it was produced."""
    listing = {}
    for line in Path(path).read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split("\t")
            listing[name] = tuple(int(size) for size in shape.strip("()").split(",") if size)
    return listing


@pytest.fixture
def original_state_dict(request):
    """``original_state_dict(file_name)``: the listing ``file_name`` beside the requesting test
    file, as ``{name: shape}`` (see :func:`read_state_dict_listing`)."""
    return lambda file_name: read_state_dict_listing(request.path.parent / file_name)

