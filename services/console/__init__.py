"""The web console: an HTTP front end of the gateway (search, results grid, assets, ingest, status)."""
