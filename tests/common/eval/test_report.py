import json

import numpy as np

from common.eval import evaluate_rank, format_results, summary_line, write_results_json


def result():
    return evaluate_rank(np.arange(5, dtype=float)[None], [1], [2, 1, 3, 4, 1], [0],
                         [1, 1, 1, 1, 2], max_rank=20)


def test_block_has_torchreid_lines_and_protocol():
    text = format_results(result())
    assert "mAP: 45.0%" in text and "Rank-1  : 0.0%" in text and "Rank-5  : 100.0%" in text
    assert "protocol: standard (1/1 queries" in text and "mINP: 40.0%" in text


def test_summary_line_names_the_settings():
    line = summary_line(result(), "market1501", 1, 5, dist="euclidean", flip="on")
    assert line.startswith("market1501 | q=1 g=5 | dist=euclidean flip=on protocol=standard")
    assert "R1 0.0 R5 100.0" in line and "mAP 45.0" in line


def test_json_round_trip(tmp_path):
    path = tmp_path / "out" / "results.json"
    write_results_json(path, result(), dataset="market1501", epoch=3)
    payload = json.loads(path.read_text())
    assert payload["dataset"] == "market1501" and payload["epoch"] == 3
    assert payload["results"]["mAP"] == 0.45 and payload["results"]["rank5"] == 1.0
    assert len(payload["results"]["cmc"]) == 20
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary left
    no_valid = evaluate_rank(np.zeros((1, 1)), [1], [2], [0], [0])
    assert "no query has a valid match" in format_results(no_valid)
