"""Retries of transient tool failures, with backoff, within a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from llmi.tools.base import ToolError

T = TypeVar("T")


def _transient(error: BaseException) -> bool:
    return isinstance(error, ToolError) and error.transient


def retry_transient(
    attempt: Callable[[], T],
    *,
    deadline_s: float,
    attempts: int = 3,
    first_wait_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``attempt`` until it succeeds, fails permanently, or time runs out.

    Only ``ToolError``s marked transient are retried; the last error is raised as is.
    """
    retrying = Retrying(
        retry=retry_if_exception(_transient),
        stop=stop_after_attempt(attempts) | stop_before_delay(deadline_s),
        wait=wait_exponential(multiplier=first_wait_s, max=max(first_wait_s, deadline_s / 4))
        + wait_random(0, first_wait_s),
        sleep=sleep,
        reraise=True,
    )
    return retrying(attempt)
