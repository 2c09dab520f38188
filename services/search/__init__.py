"""Search service."""
