"""The hostile corpus and the fuzzing of issue 17 (item 6), against the running gateway.

What is here
- `corpus.py`: the corpus as data. Each `Case` is one request to the gateway's public gRPC API (with
  the end-to-end suite's API keys and HS256 tokens), the status codes that are a precise answer, and for
  Ingest streams every item's expected outcome. Families: images (empty, truncated PNG/JPEG/WebP/GIF,
  wrong magic, SVG/HTML/PDF bytes, declared sizes beyond the pixel cap and real decompression bombs,
  1xN strips, animated, CMYK, 16-bit, palette with transparency), texts (empty, blank, over the caps,
  RTL, zero-width, control characters, query syntax; invalid UTF-8 as raw bytes), numbers (page_size,
  alpha, rerank weights, page tokens, popularity, licence expiries and nanos), filters (empty nodes,
  unknown operators and fields, type mismatches, 100k-value lists, deep nesting, too many nodes), auth
  (missing or malformed metadata, unknown keys, expired / unsigned / mis-signed tokens, missing roles,
  another tenant's asset) and streams (empty, first item bad, `[ok, bad, ok]`, duplicate ids).
- `test_corpus.py`: runs every case in order against one embedded suite; every answer must be one of
  the case's codes (never UNKNOWN or INTERNAL for a client's mistake) and no message (status details,
  per-item errors, degraded reasons) may name an exception class or a library. Afterwards a normal
  search still works, and what the search service stores is exactly the seeds plus the items
  acknowledged CREATED (nothing of a FAILED item, nothing corrupted).
- `test_fuzz.py`: hypothesis, bounded and derandomized for CI: random Search requests (text, alpha,
  page_size, filters drawn from the proto's Filter tree) against the same suite, and the gateway's and
  the search service's filter converters as pure logic (only InvalidArgument may come out).

A case that shows a defect is marked `xfail(strict=True, reason="issue 17: <finding>")`: it fails the
run once the defect is fixed, so the mark cannot outlive it.

Run: `.venv/bin/python -m pytest tests/hostile -q` (needs the demo model in triton_models/, like the
end-to-end tests; the suite starts once per session, in embedded mode).
"""
