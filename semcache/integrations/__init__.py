"""Integrations of semcache with LLM client libraries.

Each integration lives in its own submodule and imports its client library lazily, so
importing :mod:`semcache` never requires (nor loads) the ``openai`` package.
"""

from __future__ import annotations
