import pytest
import torch
from torchvision.models import resnet50

from common.layers import PretrainedWeightsError, build_resnet50


def backbone_map(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def test_torchvision_names_and_last_stride():
    model = build_resnet50(last_stride=1, pretrained=False)
    assert list(model.state_dict()) == list(resnet50().state_dict())
    assert sum(p.numel() for p in model.parameters()) == 25_557_032
    with torch.no_grad():
        assert backbone_map(model.eval(), torch.zeros(1, 3, 256, 128)).shape == (1, 2048, 16, 8)
        stride2 = build_resnet50(last_stride=2, pretrained=False).eval()
        assert backbone_map(stride2, torch.zeros(1, 3, 256, 128)).shape == (1, 2048, 8, 4)


def test_weights_from_a_path_and_from_the_hub_cache(tmp_path, monkeypatch):
    reference = resnet50()
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    loaded = build_resnet50(weights_path=path)
    torch.testing.assert_close(loaded.conv1.weight, reference.conv1.weight)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(PretrainedWeightsError, match="Nothing is downloaded.*no-pretrained"):
        build_resnet50(pretrained=True)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / "resnet50-19c8e357.pth")
    torch.testing.assert_close(build_resnet50().fc.weight, reference.fc.weight)


def test_mismatched_weights_are_reported(tmp_path):
    state = resnet50().state_dict()
    del state["layer1.0.conv1.weight"]
    state["head.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=r"1 missing key\(s\): layer1.0.conv1.weight; "
                                           r"1 unexpected key\(s\): head.weight"):
        build_resnet50(weights_path=path)
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        build_resnet50(weights_path=tmp_path / "none.pth")
