"""bench/parity.py: the parity check bench.export and bench.compile_speed share."""

import pytest
import torch

from bench.parity import FP32_TOLERANCE, LOW_PRECISION_COSINE, parity


def _features(seed=0, queries=3, gallery=12, dim=16):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(queries, dim, generator=generator),
            torch.randn(gallery, dim, generator=generator))


def test_identical_features_pass_with_zero_difference():
    reference = _features()
    check = parity(reference, tuple(f.clone() for f in reference), torch.float32)
    assert check == {"max_abs_diff_relative": 0.0, "min_cosine": pytest.approx(1.0),
                     "top10_agreement": 1.0, "passed": True}


@pytest.mark.parametrize("relative, passed", [(0.5 * FP32_TOLERANCE, True),
                                              (2 * FP32_TOLERANCE, False)])
def test_fp32_passes_within_the_tolerance_of_the_feature_scale(relative, passed):
    query, gallery = _features()
    scale = max(query.abs().max(), gallery.abs().max()).item()
    moved = gallery.clone()
    moved[5, 3] += relative * scale  # one value in one gallery row
    check = parity((query, gallery), (query, moved), torch.float32)
    assert check["max_abs_diff_relative"] == pytest.approx(relative, rel=1e-4)
    assert check["passed"] is passed
    assert check["min_cosine"] > 0.99  # the FP32 rule looks at the difference alone


def test_low_precision_passes_on_cosine_and_top10_agreement_not_the_difference():
    query, gallery = _features(queries=2, gallery=20, dim=64)
    noisy = (query * 1.002, gallery + 0.01 * torch.randn_like(gallery))
    check = parity((query, gallery), noisy, torch.bfloat16)
    assert check["max_abs_diff_relative"] > FP32_TOLERANCE
    assert check["min_cosine"] >= LOW_PRECISION_COSINE and check["top10_agreement"] >= 0.9
    assert check["passed"] and not parity((query, gallery), noisy, torch.float32)["passed"]


def test_reordered_gallery_rankings_lower_the_top10_agreement_and_fail_int8():
    query, gallery = _features(queries=2, gallery=20, dim=64)
    shuffled = gallery[torch.randperm(20, generator=torch.Generator().manual_seed(1))]
    # the same rows' cosine is what counts, so compare against features whose rows moved
    check = parity((query, gallery), (query, shuffled), torch.int8)
    assert check["top10_agreement"] < 0.9 and not check["passed"]


def test_compile_speed_and_export_use_this_check():
    from bench import compile_speed, export
    assert compile_speed.parity is parity and export.parity is parity


def test_export_does_not_import_the_speed_benchmark():
    # issue 13: bench.export needs the parity check, not the benchmark's backends and timing
    import subprocess
    import sys
    code = "import sys, bench.export; print('bench.compile_speed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
