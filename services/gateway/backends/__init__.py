"""The gateway's backends: the encoder and search services (gRPC clients) and the image analyzer.

`make_backends(settings)` is the one place that decides which adapter runs; the flows see only the
protocols of `base.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import grpc

from services.common import tls
from services.gateway.analysis import ImageAnalyzer
from services.gateway.backends.calls import CircuitBreaker, RetryPolicy, channel
from services.gateway.backends.encoder import GrpcEncoderClient
from services.gateway.backends.search import GrpcSearchClient
from services.gateway.domain import ModelRef
from services.gateway.model_refs import parse_model
from services.gateway.settings import GatewaySettings


@dataclass
class Backends:
    encoder: GrpcEncoderClient
    search: GrpcSearchClient
    analyzer: ImageAnalyzer
    channels: tuple[grpc.aio.Channel, ...]
    # One encoder per model version (settings.model_encoders; docs/LIFECYCLE.md).
    model_encoders: dict[ModelRef, GrpcEncoderClient] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        """Start what runs for the gateway's lifetime (the index generation watch)."""
        self._tasks.append(asyncio.create_task(self.search.watch_generations()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.analyzer.close()
        for ch in self.channels:
            await ch.close()


def make_backends(settings: GatewaySettings) -> Backends:
    retry = RetryPolicy(
        settings.retry_attempts, settings.retry_initial_backoff_s, settings.retry_max_backoff_s
    )

    def breaker(name: str) -> CircuitBreaker:
        return CircuitBreaker(name, settings.breaker_failure_threshold, settings.breaker_reset_s)

    # With tls_dir set, both hops are mutual TLS and the gateway presents its own certificate.
    files = tls.cert_files(settings, "gateway")
    creds = None if files is None else tls.client_credentials(files)
    encoder_channel = channel(
        settings.encoder_address, settings.default_deadline_s, settings.max_message_bytes, creds, "encoder"
    )
    search_channel = channel(
        settings.search_address, settings.default_deadline_s, settings.max_message_bytes, creds, "search"
    )
    model_encoders: dict[ModelRef, GrpcEncoderClient] = {}
    model_channels: list[grpc.aio.Channel] = []
    for spec, address in sorted(settings.model_encoders.items()):
        model = parse_model(spec)
        ch = channel(address, settings.default_deadline_s, settings.max_message_bytes, creds, "encoder")
        model_channels.append(ch)
        model_encoders[model] = GrpcEncoderClient(
            ch,
            breaker(f"encoder {spec}"),
            retry,
            settings.encoder_text_deadline_s,
            settings.encoder_image_deadline_s,
        )
    return Backends(
        encoder=GrpcEncoderClient(
            encoder_channel,
            breaker("encoder"),
            retry,
            settings.encoder_text_deadline_s,
            settings.encoder_image_deadline_s,
        ),
        search=GrpcSearchClient(
            search_channel,
            breaker("search"),
            retry,
            settings.search_query_deadline_s,
            settings.search_write_deadline_s,
            vector_encoding=settings.rerank_vector_encoding,
            watch=(
                (
                    settings.max_tenants_tracked,
                    settings.generation_watch_renew_s,
                    settings.generation_watch_retry_s,
                )
                if settings.generation_watch and settings.page_cache_entries > 0
                else None
            ),
        ),
        analyzer=ImageAnalyzer(
            safety=settings.safety_enabled,
            ocr=settings.ocr_enabled,
            nice=settings.analysis_nice if settings.analysis_mode == "deferred" else 0,
            threads=settings.analysis_threads,
            ocr_max_side=settings.ocr_max_side,
            ocr_min_confidence=settings.ocr_min_confidence,
        ),
        channels=(encoder_channel, search_channel, *model_channels),
        model_encoders=model_encoders,
    )
