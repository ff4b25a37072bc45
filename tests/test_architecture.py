"""The engine boundary: the public surface, the request API every integration uses, one
validation for every entry point, and embedding outside the cache's locks."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import semcache
from semcache.keys import analyze_request
from tests.engines import ENGINES, cache_exists
from tests.word_embedder import WordEmbedder

PACKAGE = Path(semcache.__file__).parent

PUBLIC = [
    "BinaryEncoder", "Cache", "CacheClosedError", "CacheFileError", "ConfigurationError",
    "CorruptCacheError", "DimensionError", "EmbedderError", "EmbedderMismatchError",
    "EmptyPromptError", "Entry", "Hit", "HitKind", "InvalidInputError", "InvalidTypeError",
    "InvalidVectorError", "NotASemcacheFileError", "ReadOnlyCacheError", "SchemaVersionError",
    "SemcacheError", "SerializationError", "ThresholdError", "TooLargeError", "cache_stats",
    "clear_cache", "disable_cache", "get_default_cache", "init_cache", "open", "verify", "wrap",
    "CacheConnectionError", "CacheInfo", "cache_info", "RequestCache", "CacheNotFoundError",
]


def test_public_surface_is_pinned() -> None:
    # Adding a name is a decision: update this list with it (httpx does the same).
    assert sorted(semcache.__all__) == sorted(set(semcache.__all__))
    assert set(semcache.__all__) == set(PUBLIC)
    for name in semcache.__all__:
        assert getattr(semcache, name) is not None


def test_a_cache_is_what_the_integrations_need(tmp_path: Path) -> None:
    with semcache.open(tmp_path / "c.db", embedder=WordEmbedder()) as cache:
        assert isinstance(cache, semcache.RequestCache)


def _python_files(*exclude: str) -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py")
            if not any(part in exclude for part in p.relative_to(PACKAGE).parts)]


def test_no_private_cache_member_is_used_outside_the_cache_package() -> None:
    offenders = []
    for path in _python_files("cache"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id == "cache"):
                offenders.append(f"{path.name}:{node.lineno} cache.{node.attr}")
    assert offenders == []


_SQL = re.compile(r"\b(SELECT\b.+\bFROM|INSERT INTO|DELETE FROM|UPDATE \w+ SET|"
                  r"CREATE (TABLE|INDEX|TRIGGER)|ALTER TABLE|DROP TABLE|PRAGMA \w+\s*$)")


def _string_literals(tree: ast.AST) -> list[ast.Constant]:
    """String constants that are not docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docstrings]


def test_sql_lives_in_the_store() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value[:40]!r}"
        for path in _python_files("store", "migrations")
        for node in _string_literals(ast.parse(path.read_text("utf-8")))
        if _SQL.search(node.value)]
    assert offenders == []


def test_modules_stay_small() -> None:
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text("utf-8").splitlines())
             for p in _python_files()}
    assert {name: n for name, n in sizes.items() if n > 600} == {}


def test_no_function_is_too_complex() -> None:
    """Cyclomatic complexity <= 20 everywhere (ruff's C90 rule, as pyproject.toml sets)."""
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "C90",
                           "--output-format", "concise", str(PACKAGE)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of semcache that ``path`` imports, lazily or not (``from package import
    submodule`` counts as the submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules}


def _import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in _python_files()}
    modules = set(paths)
    return {name: _imports(path, modules) - {name} for name, path in paths.items()}


def test_no_import_cycles_even_through_lazy_imports() -> None:
    graph = _import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


_ENGINE_NAMES = re.compile(r"\b(SQLiteStore|PostgresStore|LocalCodeSource)\b")


def test_engines_are_named_only_inside_the_store_package() -> None:
    offenders = []
    graph = _import_graph()
    for path in _python_files("store"):
        name = _module_name(path)
        engines = {m for m in graph[name] if m.startswith(("semcache.store.sqlite",
                                                             "semcache.store.postgres"))}
        named = _ENGINE_NAMES.findall(path.read_text("utf-8"))
        if engines or named:
            offenders.append((name, sorted(engines), sorted(set(named))))
    assert offenders == []


def test_the_cli_and_the_dashboard_use_the_public_api_only() -> None:
    graph = _import_graph()
    offenders = {name: sorted(m for m in deps if m.startswith("semcache.store")
                              or "._" in m)
                 for name, deps in graph.items()
                 if name.startswith(("semcache.cli", "semcache.dashboard"))}
    assert {name: deps for name, deps in offenders.items() if deps} == {}


def _declared_but_never_set(node: ast.ClassDef) -> list[str]:
    """Names a class annotates in its body but none of its methods assigns on ``self``:
    attributes it expects a host class to provide (an abstract base, ``ABC``, says what its
    subclasses provide: that is its job)."""
    if any(isinstance(d, (ast.Name, ast.Attribute, ast.Call)) and "dataclass" in ast.unparse(d)
           for d in node.decorator_list) or any(
            ast.unparse(base).split(".")[-1] in ("Protocol", "NamedTuple", "TypedDict", "ABC")
            or "Protocol[" in ast.unparse(base) for base in node.bases):
        return []
    declared = [item.target.id for item in node.body if isinstance(item, ast.AnnAssign)
                and item.value is None and isinstance(item.target, ast.Name)]
    assigned = {t.attr for item in ast.walk(node) for t in getattr(item, "targets", [])
                + [getattr(item, "target", None)]
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                and t.value.id == "self"}
    return [name for name in declared if name not in assigned]


def test_no_mixins() -> None:
    """No class re-declares the attributes of a host it is mixed into: no class body with
    a TYPE_CHECKING block, no ``*Mixin``, no attribute annotated but never set."""
    offenders = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            if node.name.endswith("Mixin"):
                offenders.append(f"{path.name}: class {node.name}")
            if any(isinstance(item, ast.If) and "TYPE_CHECKING" in ast.unparse(item.test)
                   for item in node.body):
                offenders.append(f"{path.name}: {node.name} declares its host's names")
            offenders += [f"{path.name}: {node.name}.{name} is the host's"
                          for name in _declared_but_never_set(node)]
    assert offenders == []


#: Private members of a Cache (what tests must not reach into, but for a few tests about
#: those very parts).
_CACHE_PRIVATES = {"_settings", "_store", "_identity", "_clock", "_gate", "_writer",
                   "_pipeline", "_entries", "_coalescer", "_keys", "_namespace", "_release",
                   "_search", "_batcher"}


def test_tests_go_through_the_public_api_or_the_store_protocol() -> None:
    """At most 10 places in the tests reach into a Cache's private parts or import a
    private module of the cache package (each about that very part)."""
    places = []
    reach = re.compile(r"\b\w+\.(" + "|".join(sorted(_CACHE_PRIVATES)) + r")\b")
    for path in sorted((PACKAGE.parent / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in _CACHE_PRIVATES and not (
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                places.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names]
                places += [f"{path.name}:{node.lineno} import {n}" for n in names
                           if n.startswith("semcache.cache._")]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                places += [f"{path.name}:{node.lineno} (code) {m.group(0)}"
                           for m in reach.finditer(node.value)]
                places += [f"{path.name}:{node.lineno} (code) import {m}" for m in
                           re.findall(r"semcache\.cache\._\w+", node.value)]
    assert len(places) <= 10, places


def test_public_names_live_in_semcache() -> None:
    """Reprs, tracebacks and docs read ``semcache.Cache``, not the module it is written in."""
    wrong = {name: obj.__module__ for name in semcache.__all__
             if isinstance(obj := getattr(semcache, name), type) or inspect.isfunction(obj)
             if obj.__module__ != "semcache"}
    assert wrong == {}


# -- the request-level API --------------------------------------------------------------------


def request(text: str, model: str = "m") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


@pytest.mark.engines(*ENGINES)
def test_lookup_and_store_follow_keys_and_scopes(location: str) -> None:
    with semcache.open(location, embedder=WordEmbedder(),
                       similarity_threshold=0.9) as cache:
        keys = analyze_request(request("What is the capital of France?"))
        entry = cache.store(keys.key, {"answer": "Paris"}, text=keys.text, scope=keys.scope)
        exact = cache.lookup(keys.key, text=keys.text, scope=keys.scope)
        assert exact is not None and exact.kind == "exact" and exact.entry_id == entry
        para = analyze_request(request("Tell me the capital of France"))
        hit = cache.lookup(para.key, text=para.text, scope=para.scope)
        assert hit is not None and hit.kind == "semantic" and hit.response == {"answer": "Paris"}
        other = analyze_request(request("Tell me the capital of France", model="other"))
        assert cache.lookup(other.key, text=other.text, scope=other.scope) is None
        assert cache.lookup(para.key, text=para.text, scope=para.scope, namespace="t2") is None
        assert cache.lookup(para.key, text=para.text, scope=para.scope, exact_only=True) is None
        # get()/put() and lookup()/store() never share keys
        assert cache.get("What is the capital of France?", exact_only=True) is None


# -- one validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad, error", [
    ({"ttl": float("inf")}, semcache.InvalidInputError),
    ({"ttl": 1e300}, semcache.InvalidInputError),
    ({"namespace": "n" * 300}, semcache.InvalidInputError),
    ({"namespace": "   "}, semcache.InvalidInputError),
    ({"namespace": "\ud800"}, semcache.InvalidInputError),
])
@pytest.mark.engines(*ENGINES)
def test_the_same_input_is_refused_the_same_way_everywhere(location: str, bad: dict,
                                                           error: type,
                                                           make_location: Any) -> None:
    import openai

    with semcache.open(location, embedder=WordEmbedder()) as cache:
        with pytest.raises(error):
            cache.put("q", "a", **bad)
        with pytest.raises(error):
            cache.store(b"k", "a", **bad)
        if "namespace" in bad:
            with pytest.raises(error):
                cache.get("q", **bad)
            with pytest.raises(error):
                cache.lookup(b"k", **bad)
        with pytest.raises(error):
            semcache.wrap(openai.OpenAI(api_key="x", base_url="http://127.0.0.1:9"), cache, **bad)
        with pytest.raises(error):
            cache.memoize(**bad)
        assert cache.stats()["puts"] == 0
    with pytest.raises(error):
        semcache.open(make_location("other.db"), embedder=WordEmbedder(), **bad)
    assert not cache_exists(make_location("other.db"))


# -- embedding outside the lock ----------------------------------------------------------------


class BlockingEmbedder(WordEmbedder):
    """Blocks inside embed() until released, to hold a lookup mid-embedding."""

    name = "test-blocking:v1"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.block = False

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.block:
            self.entered.set()
            assert self.release.wait(30)
        return super().embed(texts)


@pytest.mark.engines(*ENGINES)
def test_an_exact_hit_returns_while_another_thread_is_embedding(location: str) -> None:
    embedder = BlockingEmbedder()
    with semcache.open(location, embedder=embedder) as cache:
        cache.put("What is the capital of France?", "Paris")
        embedder.block = True
        slow = threading.Thread(target=cache.get, args=("An unrelated question to embed",))
        slow.start()
        assert embedder.entered.wait(10)
        started = time.perf_counter()
        hit = cache.get("What is the capital of France?")
        waited = time.perf_counter() - started
        embedder.release.set()
        slow.join(10)
        assert hit is not None and hit.kind == "exact"
        assert waited < 0.5, f"the exact hit waited {waited:.3f}s behind the embedder"


@pytest.mark.engines(*ENGINES)
def test_close_while_a_thread_is_embedding_raises_closed_not_a_driver_error(
        location: str) -> None:
    embedder = BlockingEmbedder()
    cache = semcache.open(location, embedder=embedder)
    cache.put("What is the capital of France?", "Paris")
    embedder.block = True
    outcome: list[object] = []

    def lookup() -> None:
        try:
            outcome.append(cache.get("Something else to embed"))
        except Exception as exc:  # noqa: BLE001 - the type is what the test checks
            outcome.append(exc)

    worker = threading.Thread(target=lookup)
    worker.start()
    assert embedder.entered.wait(10)
    started = time.perf_counter()
    cache.close()  # the in-flight lookup finishes; close does not wait for it for long
    assert time.perf_counter() - started < 5
    embedder.release.set()
    worker.join(10)
    assert outcome and not isinstance(outcome[0], Exception) or \
        isinstance(outcome[0], semcache.CacheClosedError)
    with pytest.raises(semcache.CacheClosedError):
        cache.get("What is the capital of France?")
