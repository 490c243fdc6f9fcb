"""bench/models.py: runs trained with non-README architecture flags load with --model-option,
and a wrong one is an error that says so."""

import logging
import re

import pytest
import torch

from bench.models import BenchModelError, load_method_model, parse_model_options
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
