"""Gateway service."""

import os

# The gateway's numpy work is small matrices (a 100 x D rerank window): OpenBLAS's thread pool only
# adds synchronisation, and on a busy 2-core host it made a 100x100 Gram matrix take 5-20 ms instead of
# 0.1 ms. Must be set before numpy is first imported; an operator's explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
