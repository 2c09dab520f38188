"""Benchmarks: each script prints its figures beside a baseline measured in the same run
(docs/PERFORMANCE.md)."""

from grpc.experimental.aio import init_grpc_aio

# gRPC's asyncio runtime is torn down whenever the last channel or server of a process goes, and that
# teardown joins its poller thread, which can hang for good (grpc/grpc#22365, #40989; tests/conftest.py
# holds the same reference for the test session). bench/search.py hung there closing its in-process
# Weaviate client, the last gRPC object of its process. One reference for the process keeps the runtime up.
init_grpc_aio()
