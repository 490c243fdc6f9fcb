"""Data shared by the five methods: dataset parsers, image loading, sampling, transforms."""

from common.data.dataset import DatasetError, ReidDataset, Sample
from common.data.datasets import (DATASETS, build_dataset, load_cuhk01, load_cuhk03np,
                                  load_dukemtmcreid, load_folder, load_market1501, load_msmt17,
                                  load_prid450s)
from common.data.images import ImageDataset, read_image
from common.data.sampler import IdentitySampler, RandomIdentitySampler

__all__ = ["DATASETS", "DatasetError", "IdentitySampler", "ImageDataset", "RandomIdentitySampler", "ReidDataset",
           "Sample", "build_dataset", "load_cuhk01", "load_cuhk03np", "load_dukemtmcreid",
           "load_folder", "load_market1501", "load_msmt17", "load_prid450s", "read_image"]
