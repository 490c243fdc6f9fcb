"""Data shared by the five methods: dataset parsers, image loading, sampling, transforms, and
the video (tracklet) parsers and clip sampling of :mod:`common.data.video`."""

from common.data.dataset import DatasetError, ReidDataset, Sample
from common.data.datasets import (DATASETS, build_dataset, load_cuhk01, load_cuhk03np,
                                  load_dukemtmcreid, load_folder, load_market1501, load_msmt17,
                                  load_prid450s)
from common.data.images import ImageDataset, read_image
from common.data.sampler import IdentitySampler, RandomIdentitySampler, SamplerError
from common.data.video import (VIDEO_DATASETS, ClipDataset, ClipTransform, Tracklet,
                               VideoReidDataset, build_video_dataset, load_dukemtmc_videoreid,
                               load_ilidsvid, load_mars, load_prid2011)

__all__ = ["DATASETS", "VIDEO_DATASETS", "ClipDataset", "ClipTransform", "DatasetError",
           "IdentitySampler", "ImageDataset", "RandomIdentitySampler", "ReidDataset", "SamplerError", "Sample",
           "Tracklet", "VideoReidDataset", "build_dataset", "build_video_dataset", "load_cuhk01",
           "load_cuhk03np", "load_dukemtmc_videoreid", "load_dukemtmcreid", "load_folder",
           "load_ilidsvid", "load_market1501", "load_mars", "load_msmt17", "load_prid2011",
           "load_prid450s", "read_image"]
