"""The run of torchreid's (2018) command line and ``train.py``, as two methods' released code
forks it: :mod:`args` (the flags), :mod:`trainer` (the two-phase run), :mod:`loss` (cross-entropy,
triplet and the orthogonality regularisers) and :mod:`checkpoint` (its weights files)."""
