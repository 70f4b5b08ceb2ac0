"""Where the toolkit's own folders are: the repository root and the data it ships."""
from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE_DIR = os.path.join(REPO, "cache")        # demo caches, <family>_<format>_cache.*
L1_DIR = os.path.join(REPO, "l1_models")       # latency predictors behind <device>_predicted
CONFIGS_DIR = os.path.join(REPO, "configs")    # training configs, looked up beside checkpoints
