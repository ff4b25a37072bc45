"""The one exception hierarchy of semcache.

Every error raised on purpose by semcache derives from :class:`SemcacheError` and also
from the built-in exception that fits, so ``except ValueError`` keeps working for callers
that do not know semcache. Messages name the offending value and what was expected.
"""

from __future__ import annotations


class SemcacheError(Exception):
    """Root of every error semcache raises on purpose."""


class InvalidInputError(SemcacheError, ValueError):
    """An argument has the right type but a value outside what is accepted."""


class InvalidTypeError(SemcacheError, TypeError):
    """An argument has a type semcache cannot use."""


class EmptyPromptError(InvalidInputError):
    """A prompt (or text to embed) is empty or only whitespace."""


class InvalidVectorError(InvalidInputError):
    """A vector is not 1-D, has NaN/inf values, or is all zeros."""


class DimensionError(InvalidVectorError):
    """A vector's length differs from the dimension pinned in the cache file."""


class SerializationError(InvalidInputError):
    """A response or metadata value cannot be stored as JSON."""


class TooLargeError(InvalidInputError):
    """A prompt, response or metadata value is above the documented size limit."""


class ThresholdError(InvalidInputError):
    """A similarity threshold outside [0, 1]."""


class ConfigurationError(InvalidInputError):
    """A setting has an invalid value or conflicts with the one stored in the file."""


class EmbedderMismatchError(ConfigurationError):
    """The embedder given does not match the one the file was created with."""


class EmbedderError(SemcacheError, RuntimeError):
    """An embedder failed to load or to embed (network error, rate limit that persisted...)."""


class CacheFileError(SemcacheError, OSError):
    """The cache file cannot be opened, read or written."""


class CacheNotFoundError(CacheFileError, FileNotFoundError):
    """There is no cache where one must exist (``semcache.open(path, create=False)``, the
    CLI's commands, ``semcache.verify``): no file, or no semcache schema on the server."""


class CacheConnectionError(CacheFileError):
    """The database server cannot be reached, or the connection to it was lost (PostgreSQL).

    The next call reconnects; the message names the host and port, never the password."""


class NotASemcacheFileError(CacheFileError):
    """The file is not SQLite, or is SQLite without semcache's tables."""


class CorruptCacheError(CacheFileError):
    """The database file is damaged (failed integrity checks, truncated, overwritten)."""


class SchemaVersionError(CacheFileError):
    """The file was written by a newer semcache with a schema this version does not know."""


class ReadOnlyCacheError(CacheFileError):
    """A write was attempted on a cache opened read-only or on a read-only / full disk."""


class CacheClosedError(SemcacheError, RuntimeError):
    """An operation on a cache that was closed."""


#: Every error class of the hierarchy (each is also a name of the ``semcache`` package).
__all__ = sorted(name for name, obj in list(globals().items())
                 if isinstance(obj, type) and issubclass(obj, SemcacheError))
