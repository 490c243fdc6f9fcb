"""bench/models.py: runs trained with non-README architecture flags load with --model-option,
and a wrong one is an error that says so."""

import logging
import re

import pytest
import torch

from abdnet.model import build_model as build_abdnet
from bench.models import BenchModelError, load_method_model, parse_model_options, trained_settings
from common.runrecord import write_run_record
from apnet.model import StripeAttention
from apnet.model import build_model as build_apnet
from lagnet.model import build_model as build_lagnet


def test_model_options_parse_as_python_literals_or_strings():
    assert parse_model_options(["num_attentions=4", "part_split=fixed", "abd_dan=('cam',)",
                                "shallow_cam=False"]) == {
        "num_attentions": 4, "part_split": "fixed", "abd_dan": ("cam",), "shallow_cam": False}
    with pytest.raises(BenchModelError, match="write NAME=VALUE"):
        parse_model_options(["num_attentions"])


def test_a_run_with_other_flags_loads_only_with_its_options(tmp_path):
    options = {"feats": 128, "num_attentions": 4, "part_split": "fixed"}
    torch.manual_seed(0)
    trained = build_lagnet(10, pretrained=False, **options).eval()
    path = tmp_path / "model_best.pt"
    torch.save(trained.state_dict(), path)
    with pytest.raises(BenchModelError, match="--model-option NAME=VALUE"):
        load_method_model("lagnet", path)  # --feats changes the weights' shapes
    with pytest.raises(BenchModelError, match="unexpected keyword argument 'heads'"):
        load_method_model("lagnet", path, {"heads": 4})
    # --num_attentions and --part_split change only the forward pass: the file loads without
    # them, and the options decide whether the features are the trained network's
    images = torch.randn(2, 3, 64, 32)
    partial = load_method_model("lagnet", path, {"feats": 128})
    complete = load_method_model("lagnet", path, options)
    with torch.no_grad():
        torch.testing.assert_close(complete(images), trained(images))
        assert not torch.allclose(partial(images), trained(images))


def test_an_abdnet_run_is_rebuilt_from_the_options_its_run_json_records(tmp_path):
    options = {"shallow_cam": False, "abd_dan": ("cam",), "abd_np": 2, "global_dim": 1024,
               "abd_dim": 1024, "dropout": 0.5, "cam_softmax": "code"}
    torch.manual_seed(0)
    trained = build_abdnet(10, pretrained=False, **options).eval()
    path = tmp_path / "checkpoint_best.pth.tar"
    torch.save({"state_dict": trained.state_dict(), "rank1": 0.5, "epoch": 0}, path)
    write_run_record(tmp_path, "abdnet", (64, 32), "bilinear", model_options=options)
    size, recorded = trained_settings("abdnet", path)
    assert size == (64, 32) and recorded == {**options, "abd_dan": ["cam"]}
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_method_model("abdnet", path, recorded)(images),
                                   trained(images))


# Each method's trained-file layout: the entry its main.py writes the weights under.
FILE_ENTRY = {"lagnet": None, "abdnet": "state_dict", "iabnet": "state_dict",
              "iaunet": "state_dict", "apnet": "model"}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(FILE_ENTRY))
def test_module_prefixed_weights_load_everywhere_with_the_same_features(method, tmp_path):
    """Weights saved from inside DataParallel / DDP (``module.`` keys): one reader for all."""
    torch.manual_seed(0)
    fresh = load_method_model(method)
    images = torch.randn(2, 3, 64, 32)
    files = {}
    for name, prefix in (("plain", ""), ("prefixed", "module.")):
        state = {prefix + key: value for key, value in fresh.state_dict().items()}
        entry = FILE_ENTRY[method]
        files[name] = tmp_path / f"{name}.pt"
        torch.save(state if entry is None else {entry: state, "epoch": 3}, files[name])
    with torch.no_grad():
        expected = fresh(images)
        for name, path in files.items():
            torch.testing.assert_close(load_method_model(method, path)(images), expected,
                                       msg=f"{method} {name}")


def test_a_file_without_weights_is_named_without_unrelated_advice(tmp_path):
    path = tmp_path / "notes.pt"
    torch.save({"epoch": 3, "notes": "no weights"}, path)
    with pytest.raises(BenchModelError, match="holds no state_dict") as error:
        load_method_model("apnet", path)
    assert "--model-option" not in str(error.value)


def test_bench_loads_an_apnet_s_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_apnet(7, level=2, agent="rga_s", input_size=(64, 32), pretrained=False).eval()
    torch.save({"model": model.state_dict()}, tmp_path / "apnet_s.pt")
    loaded = load_method_model("apnet", tmp_path / "apnet_s.pt", {"input_size": [64, 32]})
    assert isinstance(loaded.att_s3, StripeAttention) and not loaded.training
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded.att1.agents[0].positions == 16 * 8  # the stem map of a 64x32 input
    with pytest.raises(BenchModelError, match="shape mismatch.*--model-option"):
        load_method_model("apnet", tmp_path / "apnet_s.pt", {"input_size": [128, 64]})


@pytest.mark.slow
def test_lagnet_weights_of_earlier_versions_load_renamed(tmp_path, caplog):
    torch.manual_seed(0)
    trained = build_lagnet(10, pretrained=False, num_attentions=4).eval()
    # earlier versions of this project numbered each stream's layer3 blocks 1-5 (the original 0-4)
    block = re.compile(r"^(global_stream|part_stream|la_stream)\.0\.(\d)\.")
    legacy = {block.sub(lambda m: f"{m[1]}.0.{int(m[2]) + 1}.", key): value
              for key, value in trained.state_dict().items()}
    torch.save(legacy, tmp_path / "model_best.pt")
    caplog.set_level(logging.WARNING, logger="lagnet")
    loaded = load_method_model("lagnet", tmp_path / "model_best.pt", {"num_attentions": 4})
    assert [record.getMessage().split(" uses ")[0] for record in caplog.records] == [
        str(tmp_path / "model_best.pt")]
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), trained(images))


def test_a_file_of_another_methods_run_is_named_by_its_run_record(tmp_path):
    write_run_record(tmp_path, "lagnet", (64, 32), "bicubic")
    torch.save({"epoch": 1}, tmp_path / "model_best.pt")
    with pytest.raises(BenchModelError, match="written by a lagnet run .*give the method lagnet"):
        load_method_model("apnet", tmp_path / "model_best.pt")
