#!/bin/sh
# The original test.sh: evaluate a checkpoint, ./apnet/test.sh path/to/resnet50_checkpoint_N.pt
# [KEY VALUE ...] (the same overrides as the training run, e.g. APNET.LEVEL). CONFIG picks the
# config file as in train.sh: CONFIG=apnet/configs/apnet_s.yml ./apnet/test.sh WEIGHT_PATH
cd "$(dirname "$0")/.." || exit 1
if [ -z "$1" ]; then echo "usage: $0 WEIGHT_PATH [KEY VALUE ...]" >&2; exit 2; fi
weight=$1; shift
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1} exec python apnet/main.py --test \
    --config_file "${CONFIG:-apnet/configs/default.yml}" TEST.WEIGHT "$weight" "$@"
