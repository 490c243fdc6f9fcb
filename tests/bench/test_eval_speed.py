import json

import numpy as np
import pytest

from bench.eval_speed import main, markdown, measure_in_subprocess, row


def test_quick_run_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "eval_speed.json"
    main(["--quick", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| evaluate_rank (standard) |" in printed and "| re_ranking | 5000 samples |" in printed
    report = json.loads(out.read_text())
    assert report["benchmark"] == "eval_speed" and report["quick"] is True
    assert {"cpu", "torch", "numpy", "threads"} <= set(report["machine"])
    for r in report["rows"]:
        assert r["seconds"] > 0 and r["cpu_seconds"] > 0
        assert {"task", "size", "baseline", "baseline_seconds", "baseline_cpu_seconds"} <= set(r)


def test_default_output_is_the_ignored_local_folder():
    from bench.eval_speed import COMMITTED, LOCAL
    assert LOCAL.parent.name == "local" and LOCAL.parent.parent == COMMITTED.parent
    ignored = (COMMITTED.parents[2] / ".gitignore").read_text().splitlines()
    assert "/bench/results/local/" in ignored


@pytest.mark.slow
def test_a_measurement_in_its_own_process_reports_time_and_memory(eval_reference):
    # The MARS protocol with tiny features: every query tracklet has a valid match once the
    # whole test set is the gallery.
    spec = {"task": "mars_eval", "features": "concentrated", "dim": 16}
    ours = measure_in_subprocess({**spec, "method": "ours"})
    base = measure_in_subprocess({**spec, "method": "baseline"})
    assert ours["result"]["num_valid_queries"] == base["result"]["num_valid_queries"] == 1980
    assert np.isclose(ours["result"]["mAP"], base["result"]["mAP"], rtol=1e-12)
    assert ours["peak_memory_gb"] >= ours["inputs_memory_gb"] > 0 and ours["cpu_seconds"] > 0
    table = markdown([row("evaluate_features", "1980 x 12180", ours, "two calls", base)])
    assert "| evaluate_features | 1980 x 12180 |" in table and "x |" in table
