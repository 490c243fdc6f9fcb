"""bench/export.py and bench/extract.py: the written files reproduce eager, and the features of a
folder of crops give exactly the result of the method's own evaluation."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.export import ExportError, export_method
from bench.export import main as export_main
from bench.extract import extract_folder, load_eager, load_exported
from bench.extract import main as extract_main
from bench.models import load_method_model
from common.data.synthetic import SyntheticConfig, generate
from common.eval import compute_distance_matrix, evaluate_rank
from common.runrecord import write_run_record
from lagnet.main import main as lagnet_main

SIZE = (64, 32)


def ids_of(paths):
    """Identities and 0-based cameras from Market-style file names."""
    found = [re.match(r"(-?\d+)_c(\d+)", path.rsplit("/", 1)[-1]) for path in paths]
    return (np.array([int(m.group(1)) for m in found]),
            np.array([int(m.group(2)) - 1 for m in found]))


@pytest.fixture(scope="module")
def lagnet_export(tmp_path_factory):
    """A LAG-Net weights file in main.py's format, and its bench.export folder."""
    folder = tmp_path_factory.mktemp("lagnet")
    torch.manual_seed(0)
    weights = folder / "model_best.pt"
    torch.save(load_method_model("lagnet").state_dict(), weights)
    record = export_method("lagnet", folder / "deploy", checkpoint=weights, size=SIZE)
    return weights, folder / "deploy", record


def test_export_writes_files_that_match_eager_and_says_how_to_use_them(lagnet_export):
    weights, deploy, record = lagnet_export
    assert sorted(p.name for p in deploy.iterdir()) == ["deploy.json", "model.pt2",
                                                        "model_trace.pt"]
    assert json.loads((deploy / "deploy.json").read_text()) == record
    assert record["input"]["height"] == 64 and record["input"]["resize_interpolation"] == "bicubic"
    assert record["retrieval"] == {"flip_average": True, "l2_normalize": True,
                                   "distance": "euclidean"}
    images = torch.randn(3, 3, *SIZE)
    with torch.no_grad():
        eager = load_method_model("lagnet", weights)(images)
        program = torch.export.load(deploy / "model.pt2").module()(images)
        traced = torch.jit.load(deploy / "model_trace.pt")(images)
    assert eager.shape[1] == record["feature_dim"]
    torch.testing.assert_close(program, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(traced, eager, rtol=1e-4, atol=1e-5)


def test_extracted_features_reproduce_the_methods_own_evaluation(lagnet_export, tmp_path,
                                                                 monkeypatch, capsys):
    weights, deploy, _ = lagnet_export
    data = generate(tmp_path / "synthetic", SyntheticConfig(num_ids=16, images_per_id=4,
                                                           num_distractors=2, num_junk=2, seed=3))
    monkeypatch.chdir(tmp_path)
    lagnet_main(["--datadir", str(data), "--height", "64", "--width", "32", "--cpu",
                 "--nThread", "0", "--batchtest", "32", "--test_only", "--pre_train",
                 str(weights), "--save", "check"])
    expected = json.loads((tmp_path / "experiment/check/results_evaluate.json").read_text())
    expected = expected["targets"]["market1501"]

    extract_main([str(data / "query"), "--exported", str(deploy), "--out", "query.npz",
                  "--workers", "0", "--device", "cpu"])
    assert "images x 3584-d lagnet features (flip on, L2 on" in capsys.readouterr().out
    query = np.load(tmp_path / "query.npz")
    gallery_features, gallery_paths = extract_folder(load_exported(deploy),
                                                     data / "bounding_box_test", progress=False)
    q_pids, q_cams = ids_of(query["paths"])
    g_pids, g_cams = ids_of(gallery_paths)
    keep = g_pids != -1  # the parser drops junk from the gallery
    dist = compute_distance_matrix(query["features"], gallery_features[keep],
                                   metric=str(query["distance"]))
    result = evaluate_rank(dist, q_pids, g_pids[keep], q_cams, g_cams[keep])
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert result["cmc"][0] == pytest.approx(expected["rank1"], abs=1e-6)

    eager_features, eager_paths = extract_folder(
        load_eager("lagnet", weights, size=SIZE), data / "query", progress=False)
    assert eager_paths == list(query["paths"])
    np.testing.assert_allclose(eager_features, query["features"], rtol=1e-4, atol=1e-5)


def test_an_export_that_changes_the_features_writes_nothing(tmp_path, monkeypatch):
    from bench import export

    class OnePercentOff(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return 1.01 * self.model(x)

    def noisy_trace(model, example, folder):  # a trace of features 1% off eager's
        torch.jit.save(torch.jit.trace(OnePercentOff(model), example), folder / "model_trace.pt")

    main_file, written, _, about = export.FORMATS["torchscript"]
    monkeypatch.setitem(export.FORMATS, "torchscript", (main_file, written, noisy_trace, about))
    with pytest.raises(ExportError,
                       match="model_trace.pt does not reproduce .* 1.00e-02 of their scale"):
        export_method("apnet", tmp_path / "out", size=SIZE)
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_inputs_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit, match="does not exist"):
        export_main(["iaunet", "--checkpoint", str(tmp_path / "missing.pt"), "--out",
                     str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="not a folder written by bench.export"):
        extract_main([str(tmp_path), "--exported", str(tmp_path), "--out", "f.npz"])
    with pytest.raises(SystemExit):
        export_main(["iaunet", "--out", str(tmp_path / "x"), "--format", "onnx", "--int8"])
    assert "--int8 needs --calibration DIR" in capsys.readouterr().err
    with pytest.raises(ExportError, match="--int8 needs --evaluation DIR"):
        export_method("iaunet", tmp_path / "x", size=SIZE, formats=("onnx",),
                      calibration=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="holds no image"):
        extract_main([str(tmp_path / "empty"), "--method", "iaunet", "--out", "f.npz",
                      "--size", "64", "32"])
    with pytest.raises(SystemExit):
        extract_main([str(tmp_path), "--exported", str(tmp_path), "--checkpoint", "x.pt",
                      "--out", "f.npz"])
    assert "--checkpoint, --size and --model-option go with --method" in capsys.readouterr().err


def test_a_size_the_network_cannot_take_or_was_not_trained_at_is_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"abdnet network does not take 40x32 inputs \(the "
                                         r"feature map height 3 does not split into 2 stripes"):
        export_main(["abdnet", "--size", "40", "32", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    weights = tmp_path / "run" / "model_best.pt"
    weights.parent.mkdir()
    torch.save(load_method_model("lagnet").state_dict(), weights)
    write_run_record(weights.parent, "lagnet", SIZE, "bicubic")
    with pytest.raises(SystemExit, match=r"--size 128 64 but .*model_best.pt was trained at 64x32 "
                                         r"\(.*run.json\); drop --size"):
        export_main(["lagnet", "--checkpoint", str(weights), "--size", "128", "64", "--out",
                     str(tmp_path / "y")])
    with pytest.raises(SystemExit, match="was trained at 64x32"):
        extract_main([str(tmp_path), "--method", "lagnet", "--checkpoint", str(weights),
                      "--size", "128", "64", "--out", str(tmp_path / "f.npz")])


def _abdnet_style_evaluate(main, arch_flags):
    def evaluate(data, weights, save_dir):
        main(["-s", "market1501", "-t", "market1501", "--root", str(data), "--height", "64",
              "--width", "32", "--test-batch-size", "32", "--use-cpu", "-j", "0",
              "--flip-eval", *arch_flags, "--save-dir", str(save_dir), "--evaluate",
              "--load-weights", str(weights)])
        return json.loads((save_dir / "results_evaluate.json").read_text())["targets"]["market1501"]
    return evaluate


def _abdnet_evaluate(data, weights, save_dir):
    from abdnet.main import main
    flags = ["--abd-dan", "cam", "pam", "--abd-np", "2", "--shallow-cam"]  # the README's
    return _abdnet_style_evaluate(main, flags)(data, weights, save_dir)


def _iabnet_evaluate(data, weights, save_dir):
    from iabnet.main import main
    flags = ["--iab-dan", "cam", "pam", "--iab-np", "2", "--shallow-cam"]  # the guide's
    return _abdnet_style_evaluate(main, flags)(data, weights, save_dir)


def _iaunet_evaluate(data, weights, save_dir):
    from iaunet.main import main
    main(["--root", str(data), "--height", "64", "--width", "32", "--test-batch", "32",
          "--use-cpu", "-j", "0", "--save-dir", str(save_dir), "--evaluate", "--resume",
          str(weights)])
    return json.loads((save_dir / "results_evaluate.json").read_text())["targets"]["market1501"]


def _apnet_evaluate(data, weights, save_dir):
    from apnet.main import main
    config = str(Path(__file__).resolve().parents[2] / "apnet" / "configs" / "default.yml")
    main(["--test", "--config_file", config, "DATASETS.ROOT_DIR", str(data), "INPUT.SIZE_TEST",
          "[64, 32]", "MODEL.PRETRAINED", "False", "DATALOADER.NUM_WORKERS", "0",
          "MODEL.DEVICE", "cpu", "TEST.WEIGHT", str(weights), "OUTPUT_DIR", str(save_dir)])
    return json.loads((save_dir / "results_evaluate.json").read_text())["targets"]["market1501"]


# How each main.py stores weights it can evaluate, and its evaluation command at 64x32.
OTHER_METHODS = {
    "abdnet": (lambda state: {"state_dict": state, "rank1": 0.0, "epoch": 0}, _abdnet_evaluate),
    "iabnet": (lambda state: {"state_dict": state, "rank1": 0.0, "epoch": 0}, _iabnet_evaluate),
    "iaunet": (lambda state: {"state_dict": state, "rank1": 0.0, "epoch": 0}, _iaunet_evaluate),
    "apnet": (lambda state: {"model": state}, _apnet_evaluate),
}


@pytest.fixture(scope="module")
def tiny_market(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data") / "market1501",
                    SyntheticConfig(num_ids=12, images_per_id=4, num_distractors=2, num_junk=2,
                                    seed=5))


@pytest.mark.parametrize("method", list(OTHER_METHODS))
def test_each_methods_retrieval_convention_reproduces_its_evaluation(method, tiny_market,
                                                                    tmp_path):
    wrap, evaluate = OTHER_METHODS[method]
    torch.manual_seed(0)
    weights = tmp_path / "weights.pth"
    torch.save(wrap(load_method_model(method).state_dict()), weights)
    expected = evaluate(tiny_market, weights, tmp_path / "evaluated")

    extractor = load_eager(method, weights, size=SIZE)
    query, query_paths = extract_folder(extractor, tiny_market / "query", progress=False)
    gallery, gallery_paths = extract_folder(extractor, tiny_market / "bounding_box_test",
                                            progress=False)
    q_pids, q_cams = ids_of(query_paths)
    g_pids, g_cams = ids_of(gallery_paths)
    keep = g_pids != -1
    dist = compute_distance_matrix(query, gallery[keep], metric=extractor.retrieval.distance)
    result = evaluate_rank(dist, q_pids, g_pids[keep], q_cams, g_cams[keep])
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert result["cmc"][0] == pytest.approx(expected["rank1"], abs=1e-6)
