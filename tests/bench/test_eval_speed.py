import json

from bench.eval_speed import main


def test_quick_run_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "eval_speed.json"
    main(["--quick", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| evaluate_rank (standard) |" in printed and "| re_ranking | 5000 samples |" in printed
    report = json.loads(out.read_text())
    assert report["benchmark"] == "eval_speed" and report["quick"] is True
    assert {"cpu", "torch", "numpy", "threads"} <= set(report["machine"])
    for row in report["rows"]:
        assert row["seconds"] > 0 and {"task", "size", "baseline", "baseline_seconds"} <= set(row)
