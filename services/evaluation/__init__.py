"""`imagesearch eval`: relevance of the live gateway on judged queries, per query family and
configuration (docs/RELEVANCE.md)."""
