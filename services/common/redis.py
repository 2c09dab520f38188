"""The one way the suite opens Redis: a client that fails fast.

Redis is an optional backend everywhere it is used (the search result cache, the gateway's rate
limits): a slow or dead Redis must cost a call one short timeout, never its deadline, so timeouts are
not retried and no background health check runs; each user skips Redis for a while after a failure.
"""

from __future__ import annotations

import redis.asyncio as aioredis


def fail_fast_client(url: str, timeout_s: float) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry_on_timeout=False,
        health_check_interval=0,
    )
