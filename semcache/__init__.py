"""semcache: an embedded, persistent, multi-process semantic cache for LLM applications."""
