"""Fault injection on the real stack: kill -9 of one component during an ingest stream and searches
under load, then count acknowledged vs stored vs findable vs duplicated items (docs/CHAOS.md)."""
