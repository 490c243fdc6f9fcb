"""The training recipe ABD-Net and IAB-Net share: both released code bases are forks of
deep-person-reid as of November 2018, with the same ``args.py``, losses, ``train.py`` and
checkpoint format (``../shared/specs/abdnet.md`` §1, §3-§5; ``iabnet.md`` §1, §4-§5)."""
