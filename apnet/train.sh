#!/bin/sh
# The original train.sh: train with configs/default.yml (two GPUs, DataParallel). Extra arguments
# are KEY VALUE overrides, e.g. ./apnet/train.sh DATASETS.NAMES "('dukemtmc')" APNET.LEVEL 1
# CONFIG picks another config file (a path from the project root or absolute), e.g. APNet-S:
# CONFIG=apnet/configs/apnet_s.yml ./apnet/train.sh
cd "$(dirname "$0")/.." || exit 1
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1} exec python apnet/main.py \
    --config_file "${CONFIG:-apnet/configs/default.yml}" "$@"
