"""Gateway service."""

import os

# The gateway's numpy work is small matrices (a 100 x D rerank window): OpenBLAS's thread pool only
# adds synchronisation there (measured in docs/GATEWAY.md). Must be set before numpy is first
# imported; an operator's explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
