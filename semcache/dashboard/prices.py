"""The estimated cost saved: a per-model price table and what a served answer would have
cost had the model been called.

The table ships with the package (``prices.json``: list prices per 1M tokens, input and
output, with where they come from and when); ``semcache ui --prices FILE`` (and ``semcache
serve --prices FILE``) merges a file of the same format over it, model by model, for other
models or the prices an account really pays.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semcache.errors import ConfigurationError

#: The table shipped with the package.
BUILTIN_PRICES = Path(__file__).resolve().with_name("prices.json")

#: What the estimate assumes (shown beside it on the page and in the JSON).
ASSUMPTIONS = (
    "Each hit counts as one model call avoided, priced at the stored answer's own usage "
    "(its input and output tokens) and the list price of its model; an answer whose usage "
    "has no input/output split is priced at the input rate. Only the {limit:,} most-hit "
    "entries still in the cache are priced: hits of entries since evicted, deleted or "
    "expired, and of models missing from the price table, are not. Embedding costs, "
    "cached-input discounts and batch prices are left out.")

# Version suffixes that do not change the price: dates, snapshots, "latest", Bedrock-style
# "-v1:0" and Vertex-style "@20250929".
_VERSION = re.compile(r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{4}|-latest|@\d{8}|-v\d+(?::\d+)?)+$")


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1e6


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name, and where they come from."""

    models: Mapping[str, Price]
    source: str
    as_of: str | None = None

    def lookup(self, model: str) -> tuple[str, Price] | None:
        """The table's name and price for ``model`` (``openai/gpt-4o-2024-08-06`` is
        priced as ``gpt-4o``), or None when the table does not know it."""
        name = model.strip().lower()
        for candidate in (name, name.rsplit("/", 1)[-1]):
            if candidate in self.models:
                return candidate, self.models[candidate]
            bare = _VERSION.sub("", candidate)
            if bare in self.models:
                return bare, self.models[bare]
        return None

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "as_of": self.as_of, "unit": "USD per 1M tokens",
                "models": len(self.models)}


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the price file {str(path)!r}: "
                                 f"{exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigurationError(f"the price file {str(path)!r} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ConfigurationError(
            f"the price file {str(path)!r} must be a JSON object with \"models\": "
            '{"model-name": {"input": USD per 1M tokens, "output": USD per 1M tokens}}')
    return data


def _price(path: Path, model: Any, value: Any) -> Price:
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"the price file {str(path)!r} has a model name that is not "
                                 f"a non-empty string: {model!r}")
    if not isinstance(value, dict) or set(value) - {"input", "output"}:
        raise ConfigurationError(f"the price of {model!r} in {str(path)!r} must be "
                                 f'{{"input": number, "output": number}}; got {value!r:.80}')
    rates = []
    for side in ("input", "output"):
        rate = value.get(side)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or \
                not math.isfinite(rate) or not 0 <= rate < 1e6:
            raise ConfigurationError(f"the {side} price of {model!r} in {str(path)!r} must be "
                                     f"USD per 1M tokens, a number >= 0; got {rate!r}")
        rates.append(float(rate))
    return Price(*rates)


def load_prices(path: str | None = None) -> PriceTable:
    """The shipped table, with the models of the file at ``path`` (same format) added or
    replacing the shipped ones. Raises ConfigurationError naming the file and the entry
    that is wrong."""
    builtin = _read(BUILTIN_PRICES)
    models = {name.lower(): _price(BUILTIN_PRICES, name, v)
              for name, v in builtin["models"].items()}
    source = f"built-in table ({builtin.get('source', 'list prices')})"
    as_of = builtin.get("as_of")
    if path is not None:
        file = Path(path)
        data = _read(file)
        models.update({name.strip().lower(): _price(file, name, v)
                       for name, v in data["models"].items()})
        source = f"{file.name} over the built-in table"
        as_of = data.get("as_of") if isinstance(data.get("as_of"), str) else None
    return PriceTable(models, source, as_of)


def usage_of(response: Any, metadata: Any, tokens: int) -> tuple[str | None, int, int]:
    """(model, input tokens, output tokens) of a stored answer: the model the response
    names (else the request's, from the metadata ``wrap`` and the proxy store), the
    usage of a chat completion or a Responses API answer; without an input/output split,
    ``tokens`` (the entry's token count) as input."""
    model = None
    usage: Any = None
    if isinstance(response, dict):
        model = response.get("model")
        usage = response.get("usage")
    if not isinstance(model, str) and isinstance(metadata, dict):
        model = metadata.get("model")
    model = model if isinstance(model, str) and model.strip() else None
    if isinstance(usage, dict):
        prompt = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = _count(usage.get("completion_tokens", usage.get("output_tokens")))
        if prompt is not None and completion is not None:
            return model, prompt, completion
    return model, max(int(tokens), 0), 0


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


__all__ = ["ASSUMPTIONS", "BUILTIN_PRICES", "Price", "PriceTable", "load_prices", "usage_of"]
