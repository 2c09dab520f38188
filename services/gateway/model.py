"""Old name of `services.gateway.domain`, kept only for importers outside the gateway's own code.

`bench/gateway_rerank.py` (owned by the bench) and `tests/gateway/test_rerank.py` (kept unchanged on
purpose: it pins the rerank's results) import their types from here. New code imports
`services.gateway.domain`; delete this module once nothing imports it.
"""

from services.gateway.domain import Asset, FirstStageScores, Hit, StageScores, Vector

__all__ = ["Asset", "FirstStageScores", "Hit", "StageScores", "Vector"]
