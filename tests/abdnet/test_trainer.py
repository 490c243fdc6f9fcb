"""The fixbase rule on the ABD-Net model: what trains in the warm-up epochs (abdnet.md §4.3)."""

from abdnet.model import build_model
from common.layers.two_branch import HEAD_MODULES
from common.torchreid_run.trainer import open_all_layers, open_specified_layers


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_fixbase_opens_the_heads_and_attention_and_freezes_the_backbone():
    model = build_model(751, pretrained=False)
    model.train()
    open_specified_layers(model, ["classifier"], HEAD_MODULES)
    # shallow CAM gamma + ABD head + global head + three 751-way classifiers (spec §2.8)
    assert trainable(model) == 1 + 26_292_866 + 2_100_224 + 3 * (1024 * 751 + 751)
    assert model.common_branch.shallow_cam._cam_module.gamma.requires_grad
    assert not model.common_branch.backbone1[0].weight.requires_grad
    assert not any(p.requires_grad for p in model.branches[0][0].parameters())
    # frozen BatchNorms keep their statistics (eval); the heads' dropout is active (train)
    assert not model.common_branch.backbone2[0][0].bn1.training
    assert not model.branches[1][0].backbone[0].bn1.training
    assert model.branches[0][1].fc[3].training and model.branches[1][1].sum_conv[0].training
    open_all_layers(model)
    assert trainable(model) == 69_175_184
    assert all(m.training for m in model.modules())
