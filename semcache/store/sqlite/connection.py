"""Opening an SQLite connection the way semcache needs it.

apsw bundles a modern SQLite and can load extensions on every platform (the stdlib
sqlite3 of many Pythons cannot), so sqlite-vec is loaded into every connection.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import threading
import urllib.parse
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import apsw

from semcache.errors import (
    CacheFileError,
    CorruptCacheError,
    NotASemcacheFileError,
    ReadOnlyCacheError,
    SemcacheError,
)

log = logging.getLogger("semcache")

#: PRAGMA application_id of every semcache file ("SEMC"): tells our files from others.
APPLICATION_ID = 0x53454D43

#: Pragmas applied on every connection. synchronous=NORMAL in WAL mode keeps every
#: committed transaction across a crash of the process (kill -9); only an OS crash or
#: power loss can drop the last commits. The values live in the settings table so an
#: operator can change them for every process at once (diskcache does the same).
DEFAULT_PRAGMAS: dict[str, str] = {
    "synchronous": "NORMAL",
    "cache_size": "-16384",  # KiB: 16 MiB page cache per connection
    "mmap_size": "268435456",
    "temp_store": "MEMORY",
}

BUSY_TIMEOUT_MS = 60_000


@functools.lru_cache(maxsize=1)
def sqlite_vec_path() -> str:
    """The sqlite-vec extension's path (what ``sqlite_vec.loadable_path()`` returns), found
    without importing the package: its ``__init__`` imports the stdlib ``sqlite3`` module
    (~2.5 ms of a cold open) for helpers semcache does not use."""
    spec = importlib.util.find_spec("sqlite_vec")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the sqlite-vec package is not installed (pip install sqlite-vec)")
    return os.path.normpath(os.path.join(list(spec.submodule_search_locations)[0], "vec0"))


def connect(path: str, *, readonly: bool = False) -> apsw.Connection:
    """Open ``path`` with sqlite-vec loaded and the busy timeout set.

    Raises CacheFileError subclasses for files that cannot be opened.
    """
    extension = sqlite_vec_path()  # before the file is opened: nothing to close on error
    flags = apsw.SQLITE_OPEN_READONLY if readonly else (
        apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    )
    target = path
    wal = path + "-wal"
    if on_readonly_fs(path) and not (os.path.exists(wal) and os.path.getsize(wal) > 0):
        # Nobody can write a file on a read-only filesystem, and SQLite cannot create the
        # -shm a WAL reader needs there: open it as the immutable file it is. (With a
        # non-empty -wal left by a crash, immutable would ignore commits: SQLite decides.)
        flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
        target = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?immutable=1"
    try:
        conn = apsw.Connection(target, flags=flags)
    except apsw.Error as exc:
        raise translate(exc, path) from None
    try:
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        conn.enable_load_extension(True)
        conn.load_extension(extension)
        conn.enable_load_extension(False)
    except apsw.Error as exc:
        conn.close()
        raise translate(exc, path) from None
    return conn


def on_readonly_fs(path: str) -> bool:
    """True when an existing ``path`` lives on a filesystem mounted read-only."""
    if not os.path.exists(path):
        return False
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def apply_pragmas(conn: apsw.Connection, pragmas: dict[str, str], path: str) -> None:
    for name, value in pragmas.items():
        if not name.replace("_", "").isalnum() or not str(value).lstrip("-").replace(
                "_", "").isalnum():
            log.warning("semcache: ignoring odd pragma setting %r=%r", name, value)
            continue  # never interpolate anything odd from the file into SQL
        try:
            conn.execute(f"PRAGMA {name}={value}").fetchall()
        except apsw.Error as exc:
            raise translate(exc, path) from None


def translate(exc: BaseException, path: str) -> SemcacheError:
    """Map a driver error to the semcache error a user can act on, naming the path."""
    if isinstance(exc, SemcacheError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, UnicodeDecodeError):  # TEXT that is not UTF-8: damaged pages
        return CorruptCacheError(f"cache file {path!r} is corrupt (invalid text: {exc}); "
                                 "delete it to start a new cache")
    if isinstance(exc, apsw.NotADBError):
        return NotASemcacheFileError(f"{path!r} is not an SQLite database ({text})")
    if isinstance(exc, apsw.CorruptError):
        return CorruptCacheError(f"cache file {path!r} is corrupt ({text}); "
                                 "delete it to start a new cache")
    if isinstance(exc, apsw.ReadOnlyError):
        return ReadOnlyCacheError(f"cache file {path!r} is read-only ({text})")
    if isinstance(exc, apsw.FullError):
        return ReadOnlyCacheError(f"disk full while writing cache file {path!r} ({text})")
    if isinstance(exc, apsw.CantOpenError):
        return CacheFileError(f"cannot open cache file {path!r} ({text})")
    if isinstance(exc, apsw.IOError):
        return CacheFileError(f"I/O error on cache file {path!r} ({text})")
    if isinstance(exc, apsw.BusyError):
        return CacheFileError(f"cache file {path!r} stayed locked by another process ({text})")
    return CacheFileError(f"SQLite error on cache file {path!r} ({text})")


@contextlib.contextmanager
def translated(path: str) -> Iterator[None]:
    """Re-raise driver errors (and undecodable text) inside the block as semcache errors."""
    try:
        yield
    except (apsw.Error, UnicodeDecodeError) as exc:
        raise translate(exc, path) from None


class Database:
    """This process's connection to one cache file, shared by its threads.

    Every statement runs under :attr:`mutex` (one apsw connection, many threads). A
    connection must not cross ``fork()`` (gunicorn ``--preload``): a forked child reopens
    it before its first statement (:meth:`check_fork`; the exact tier's hot path checks the
    cheap :attr:`forked` flag that :func:`_after_fork` sets instead of calling getpid()).
    """

    def __init__(self, path: str, *, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self.mutex = threading.RLock()
        self.conn: Any = connect(path, readonly=readonly)
        self.pragmas: dict[str, str] = dict(DEFAULT_PRAGMAS)
        self.pid = os.getpid()
        self.forked = False
        # The exact tier's statement runs on a cursor of its own, kept: creating a cursor
        # per lookup costs ~0.35 us of a ~5 us hit. get_by_key always runs the statement to
        # its end, so no read transaction stays open between lookups.
        self.key_cursor: Any = self.conn.cursor()
        # Likewise for the counters every write transaction adds (~1.5 us per statement).
        self.counter_cursor: Any = self.conn.cursor()
        #: This process wrote entries whose sqlite-vec rows are not written yet.
        self.codes_pending = False
        #: The counters' time series (store/sqlite/write.py): the current minute as this
        #: process last saw it (None: read it again), the minute it last pruned old ones.
        self.minute_open: int | None = None
        self.series_pruned = 0
        _DATABASES.add(self)

    def configure(self, pragmas: dict[str, str]) -> None:
        apply_pragmas(self.conn, pragmas, self.path)
        self.pragmas = pragmas

    def check_fork(self) -> None:
        """Reopen the connection in a forked child (call under :attr:`mutex`)."""
        if os.getpid() != self.pid:
            self.conn = connect(self.path, readonly=self.readonly)
            apply_pragmas(self.conn, self.pragmas, self.path)
            self.key_cursor = self.conn.cursor()
            self.counter_cursor = self.conn.cursor()
            self.pid = os.getpid()
        self.forked = False

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read statement (fixed SQL of the engine, values bound)."""
        with self.mutex, translated(self.path):
            self.check_fork()
            return [tuple(r) for r in self.conn.execute(sql, params)]

    def scalar(self, sql: str, what: str) -> int:
        """The one integer a bookkeeping query returns; its absence means a damaged file
        (call under :attr:`mutex`)."""
        rows = self.conn.execute(sql).fetchall()
        if len(rows) != 1 or not isinstance(rows[0][0], int):
            raise CorruptCacheError(f"cache file {self.path!r} is corrupt ({what} is missing "
                                    "or not an integer); delete it to start a new cache")
        return int(rows[0][0])

    def state(self) -> tuple[int, int]:
        """``(change_seq, state_token)`` (call under :attr:`mutex`)."""
        rows = self.conn.execute(_STATE).fetchall()
        seq, token = rows[0] if len(rows) == 1 else (None, None)
        if not isinstance(seq, int) or not isinstance(token, int):
            raise CorruptCacheError(f"cache file {self.path!r} is corrupt (sync_state is "
                                    "missing or not integers); delete it to start a new cache")
        return seq, token

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes when another connection commits (the
        code mirror's cheap "did anything change?" check, ~2 us)."""
        with self.mutex:
            if os.getpid() != self.pid:
                self.check_fork()
            try:
                version = self.conn.execute("PRAGMA data_version").fetchall()[0][0]
            except apsw.Error as exc:
                raise translate(exc, self.path) from None
        assert isinstance(version, int)
        return version

    def close(self) -> None:
        with self.mutex:
            try:
                self.conn.close()
            except apsw.Error as exc:
                log.warning("semcache: error closing %s: %s", self.path, exc)


_STATE = "SELECT change_seq, state_token FROM sync_state WHERE id = 1"

#: Every open database of this process: a forked child marks them all (see Database).
_DATABASES: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork() -> None:
    for db in list(_DATABASES):
        db.forked = True
        db.mutex = threading.RLock()  # a parent's thread may have held it at fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
