"""Which failures another attempt can cure.

A load is idempotent, so retrying is always safe, but it only helps when the cause goes away by
itself: a lost or refused connection, a timeout, a server restarting, a MySQL deadlock or lock
wait, BigQuery's 5xx answers and rate limits. Everything else fails the same way every time (a
refused password, a reversed partition range, a full staging disk, a value the warehouse cannot
hold, a value the type map cannot convert): retried, it would only delay its message by minutes.
Unknown errors count as deterministic: a retry has to be earned.

`is_transient` reads the whole chain of an error (`__cause__` and `__context__`: plex_etl's own
errors wrap the driver's, sometimes `from None` to keep a password out of the message) from the
outside in; the first error it recognises decides. No Dagster import: `plex_etl.defs.retries`
turns the verdict into Dagster's retry or an immediate failure.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator


class TransientError(Exception):
    """Base of plex_etl's own errors whose cause can go away by itself (a wait that ran out)."""


# MySQL server and client error codes whose cause passes: too many connections, shutdown in
# progress, offline mode, lock wait timeout, deadlock, statement timeouts (MariaDB
# max_statement_time, MySQL max_execution_time), connection killed, interactive timeout, and
# the client's can't connect / server gone / lost connection.
TRANSIENT_MYSQL_CODES = frozenset({
    1040, 1053, 3032, 1205, 1213, 1969, 3024, 1927, 4031, 2002, 2003, 2006, 2013, 2055,
})
CR_UNKNOWN_HOST = 2005  # transient only as a temporary resolver failure (EAI_AGAIN, "(-3)")
# BigQuery's reasons for a retryable error (its 5xx, and rate limits reported in a 4xx or a job).
TRANSIENT_BIGQUERY_REASONS = frozenset({
    "backendError", "internalError", "rateLimitExceeded", "jobBackendError", "jobInternalError",
    "jobRateLimitExceeded",
})
DETERMINISTIC_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                                  errno.EPERM, errno.ENOENT})


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what caused it or was being handled when it was raised, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(error: BaseException) -> bool:
    """Whether another attempt may succeed where `error` failed (see the module docstring)."""
    for link in error_chain(error):
        verdict = _verdict(link)
        if verdict is not None:
            return verdict
    return False


def _verdict(error: BaseException) -> bool | None:
    """True (transient), False (deterministic) or None (not recognised: look at its cause)."""
    if isinstance(error, TransientError):
        return True
    module = type(error).__module__
    if module.startswith(("pymysql", "MySQLdb")):
        return _mysql_verdict(error)
    if module.startswith("google.api_core"):
        return _google_api_verdict(error)
    if module.startswith("google.auth"):
        return bool(getattr(error, "retryable", False))
    if module.startswith(("requests", "urllib3")):
        names = {cls.__name__ for cls in type(error).__mro__}
        return bool(names & {"ConnectionError", "Timeout", "ProtocolError", "TimeoutError"}) or None
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if isinstance(error, OSError) and error.errno in DETERMINISTIC_ERRNOS:
        return False
    if isinstance(error, (ValueError, TypeError)):  # the input is wrong: plex_etl's value errors
        return False
    return None


def _mysql_verdict(error: BaseException) -> bool | None:
    code = error.args[0] if error.args and isinstance(error.args[0], int) else None
    if code is None:
        return None
    if code == CR_UNKNOWN_HOST:
        return "(-3)" in str(error) or "temporary failure" in str(error).lower()
    return code in TRANSIENT_MYSQL_CODES


def _google_api_verdict(error: BaseException) -> bool:
    from google.api_core import exceptions

    if isinstance(error, (exceptions.ServerError, exceptions.TooManyRequests, exceptions.RetryError)):
        return True
    reasons = {e.get("reason") for e in getattr(error, "errors", None) or [] if isinstance(e, dict)}
    return bool(reasons & TRANSIENT_BIGQUERY_REASONS)
