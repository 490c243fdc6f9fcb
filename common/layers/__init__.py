"""Building blocks used by two or more methods."""

from common.layers.resnet import (IMAGENET_WEIGHT_FILES, PretrainedWeightsError, build_resnet50,
                                  find_imagenet_weights)

__all__ = ["IMAGENET_WEIGHT_FILES", "PretrainedWeightsError", "build_resnet50",
           "find_imagenet_weights"]
