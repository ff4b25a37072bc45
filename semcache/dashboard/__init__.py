"""The dashboard: one page of a cache's figures (hit rate over time, hits by kind,
near-miss rejections, tokens and estimated cost saved, namespaces, the most-hit entries,
wrong-answer reports) and the same figures as JSON.

Served by ``semcache ui CACHE`` (:mod:`.server`, the standard library) and by ``semcache
serve`` at ``/`` (the proxy's app). It reads the cache through the public :class:`Cache`
API only; see docs/operations.md for the page, the ``/api/stats`` schema and the access
rules (:mod:`.auth`).
"""

from semcache.dashboard.app import Dashboard, Reply
from semcache.dashboard.auth import Gate
from semcache.dashboard.figures import SCHEMA, collect
from semcache.dashboard.prices import PriceTable, load_prices

__all__ = ["SCHEMA", "Dashboard", "Gate", "PriceTable", "Reply", "collect", "load_prices"]
