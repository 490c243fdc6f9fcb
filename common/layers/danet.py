"""DANet's attention modules (Fu et al., CVPR 2019) as ABD-Net's released code has them, used by
ABD-Net and IAB-Net (``../shared/specs/abdnet.md`` §2.3-§2.5, ``iabnet.md`` §3.3).

One paper-vs-code divergence has a switch (default = the code): ``CAM(softmax="code")`` weights
channels with softmax(-E), as DANet's reference CAM does (it subtracts the energy from its row
maximum); ``"paper"`` uses softmax(+E) (abdnet.md §2.4).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CAM", "DANetHead", "PAM"]


class CAM(nn.Module):
    """Channel attention (DANet's CAM, §2.4): out = softmax(∓E) A with E = A Aᵀ, then γ out + A.

    γ is a scalar initialised to 0, so the module starts as the identity.
    """

    def __init__(self, softmax="code"):
        super().__init__()
        if softmax not in ("code", "paper"):
            raise ValueError(f"cam_softmax must be 'code' or 'paper', got {softmax!r}")
        self.softmax = softmax
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        energy = flat @ flat.transpose(1, 2)
        if self.softmax == "code":  # rowmax(E) - E: the row constant cancels, softmax(-E)
            energy = energy.max(dim=-1, keepdim=True).values - energy
        attention = F.softmax(energy, dim=-1)
        out = (attention @ flat).reshape(b, c, h, w)
        return self.gamma * out + x


class PAM(nn.Module):
    """Position attention (SAGAN style, §2.5): softmax over key positions of Q K, applied to V."""

    def __init__(self, channels):
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(channels, channels // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        query = self.query_conv(x).reshape(b, -1, h * w).transpose(1, 2)
        key = self.key_conv(x).reshape(b, -1, h * w)
        attention = F.softmax(query @ key, dim=-1)
        value = self.value_conv(x).reshape(b, c, h * w)
        out = (value @ attention.transpose(1, 2)).reshape(b, c, h, w)
        return self.gamma * out + x


class DANetHead(nn.Module):
    """conv5c (3x3, half width) -> attention -> conv52 (3x3) -> conv7 (Dropout2d, 1x1) (abdnet.md §2.3)."""

    def __init__(self, in_channels, out_channels, attention):
        super().__init__()
        inter = in_channels // 2
        self.conv5c = nn.Sequential(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(inter), nn.ReLU())
        self.attention_module = attention
        self.conv52 = nn.Sequential(nn.Conv2d(inter, inter, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(inter), nn.ReLU())
        self.conv7 = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(inter, out_channels, 1))

    def forward(self, x):
        return self.conv7(self.conv52(self.attention_module(self.conv5c(x))))
