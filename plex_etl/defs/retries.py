"""Which failed loads Dagster retries: transient failures only.

Each table asset keeps a RetryPolicy (defs/assets.py: two retries, after 30 s then 90 s), since
a load is idempotent. A failure whose cause cannot pass by itself (plex_etl.errors: a refused
password, a reversed partition range, a full staging disk, a value the warehouse cannot hold, a
conversion error) becomes `dg.Failure(..., allow_retries=False)`: the step fails at once with
the error's own message. A transient one (a lost connection, a timeout, BigQuery 5xx or rate
limits, a MySQL deadlock) is re-raised as it is, for the policy to retry. A stopped run
(SIGTERM, Ctrl-C, a terminated run) fails at once too: with the policy Dagster would otherwise
schedule the interrupted step again after its delay.
"""

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg

from plex_etl.errors import is_transient

F = TypeVar("F", bound=Callable[..., Any])


def describe(error: BaseException) -> str:
    """The error's message; a foreign error's also names its type ('OSError: [Errno 28] ...')."""
    if type(error).__module__.startswith("plex_etl"):
        return str(error)
    return f"{type(error).__name__}: {error}"


@contextmanager
def retried_only_if_transient(what: str) -> Iterator[None]:
    """Run the block; a failure that is not transient fails the step at once, named by `what`."""
    try:
        yield
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt) as exc:
        raise dg.Failure(f"{what}: interrupted", allow_retries=False) from exc
    except dg.Failure:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise
        raise dg.Failure(description=f"{what}: {describe(exc)} (not retried: the same error would "
                         "come back)", allow_retries=False) from exc


def only_transient_retried(fn: F) -> F:
    """`retried_only_if_transient` around an asset's body, named by the asset key (the wrapped
    signature stays the body's, which Dagster reads for its context and resources)."""

    @functools.wraps(fn)
    def wrapper(context: Any, *args: Any, **kwargs: Any) -> Any:
        with retried_only_if_transient(context.asset_key.to_user_string()):
            return fn(context, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
