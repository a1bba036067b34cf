"""reconciler.core.backoff: the delays of the three things tried again after a failure (provider
calls, status pushes, fetches) and the retry loop of the first two."""

from __future__ import annotations

import threading
import time

import pytest

from reconciler.core.backoff import Backoff, cancellable_sleep, retry


@pytest.mark.parametrize(("backoff", "failures", "at_least", "expected"), [
    # the fetcher's: 10 s doubling to 900 s
    (Backoff(10.0, 900.0), 1, 0.0, 10.0),
    (Backoff(10.0, 900.0), 2, 0.0, 20.0),
    (Backoff(10.0, 900.0), 7, 0.0, 640.0),
    (Backoff(10.0, 900.0), 8, 0.0, 900.0),
    # weeks offline: the exponent must not overflow
    (Backoff(10.0, 900.0), 5000, 0.0, 900.0),
    # the executor's: a server's "retry after" raises the delay, within the cap
    (Backoff(5.0, 300.0), 1, 30.0, 30.0),
    (Backoff(5.0, 300.0), 3, 1.0, 20.0),
    (Backoff(5.0, 300.0), 1, 1000.0, 300.0),
    (Backoff(0.0, 300.0), 4, 0.0, 0.0),
    # before any failure, as after the first
    (Backoff(2.0, 60.0), 0, 0.0, 2.0),
])
def test_delay(backoff: Backoff, failures: int, at_least: float, expected: float) -> None:
    assert backoff.delay(failures, at_least=at_least) == expected


def test_full_jitter_draws_between_zero_and_the_delay() -> None:
    drawn: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        drawn.append((low, high))
        return high / 2

    jittered = Backoff(0.05, 5.0, jitter=True)
    assert [jittered.delay(n, uniform=uniform) for n in (1, 2, 3, 10)] == \
        [0.025, 0.05, 0.1, 2.5]
    assert drawn == [(0.0, 0.05), (0.0, 0.1), (0.0, 0.2), (0.0, 5.0)]
    for _ in range(100):
        assert 0.0 <= jittered.delay(4) <= 0.4


class Flaky(Exception):
    pass


class Other(Exception):
    pass


def failing(times: int, then: object = "done",
            error: type[Exception] = Flaky) -> tuple[list[int], object]:
    calls: list[int] = []

    def attempt() -> object:
        calls.append(len(calls) + 1)
        if len(calls) <= times:
            raise error(f"failure {len(calls)}")
        return then

    return calls, attempt


@pytest.mark.parametrize(("failures", "attempts", "returns", "calls", "slept"), [
    (0, 4, True, 1, []),
    (2, 4, True, 3, [1.0, 2.0]),
    (3, 4, True, 4, [1.0, 2.0, 4.0]),
    (4, 4, False, 4, [1.0, 2.0, 4.0]),
    (5, 1, False, 1, []),
])
def test_retry_tries_again_with_the_backoff(failures: int, attempts: int, returns: bool,
                                            calls: int, slept: list[float]) -> None:
    made, attempt = failing(failures)
    sleeps: list[float] = []
    logged: list[tuple[int, float, str]] = []
    if returns:
        assert retry(attempt, on=Flaky, attempts=attempts, backoff=Backoff(1.0, 60.0),
                     sleep=sleeps.append,
                     before_sleep=lambda n, d, e: logged.append((n, d, str(e)))) == "done"
    else:
        with pytest.raises(Flaky, match=f"failure {calls}"):
            retry(attempt, on=Flaky, attempts=attempts, backoff=Backoff(1.0, 60.0),
                  sleep=sleeps.append,
                  before_sleep=lambda n, d, e: logged.append((n, d, str(e))))
    assert len(made) == calls
    assert sleeps == slept
    assert logged == [(n + 1, d, f"failure {n + 1}") for n, d in enumerate(slept)]


def test_retry_lets_other_errors_through_at_once() -> None:
    made, attempt = failing(1, error=Other)
    with pytest.raises(Other):
        retry(attempt, on=Flaky, attempts=5, backoff=Backoff(1.0, 1.0), sleep=lambda _: None)
    assert made == [1]


def test_retry_gives_up_when_told_to() -> None:
    made, attempt = failing(10)
    sleeps: list[float] = []
    answers = iter([False, True])
    with pytest.raises(Flaky, match="failure 2"):
        retry(attempt, on=Flaky, attempts=10, backoff=Backoff(1.0, 1.0), sleep=sleeps.append,
              give_up=lambda: next(answers))
    assert made == [1, 2] and sleeps == [1.0]


def test_retry_waits_what_the_error_asks() -> None:
    class Later(Exception):
        def __init__(self, delay: float) -> None:
            super().__init__("later")
            self.delay = delay

    errors = iter([Later(30.0), Later(0.5)])

    def attempt() -> str:
        error = next(errors, None)
        if error is not None:
            raise error
        return "done"

    sleeps: list[float] = []
    assert retry(attempt, on=Later, attempts=3, backoff=Backoff(1.0, 10.0),
                 sleep=sleeps.append,
                 at_least=lambda e: e.delay if isinstance(e, Later) else 0.0) == "done"
    assert sleeps == [10.0, 2.0]


def test_cancellable_sleep_ends_when_cancelled() -> None:
    flag = threading.Event()
    threading.Timer(0.2, flag.set).start()
    started = time.monotonic()
    cancellable_sleep(60.0, flag.is_set)
    assert time.monotonic() - started < 30.0
    assert flag.is_set()


def test_cancellable_sleep_sleeps_its_time() -> None:
    started = time.monotonic()
    cancellable_sleep(0.3, lambda: False)
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(("failures", "attempts", "returns", "calls", "slept"), [
    # the caller's own first attempt failed: it counts as one of the attempts
    (0, 3, True, 1, [1.0]),
    (1, 3, True, 2, [1.0, 2.0]),
    (2, 3, False, 2, [1.0, 2.0]),
    (0, 1, False, 0, []),
])
def test_retry_after_the_callers_own_first_attempt(failures: int, attempts: int,
                                                  returns: bool, calls: int,
                                                  slept: list[float]) -> None:
    made, attempt = failing(failures)
    sleeps: list[float] = []
    first = Flaky("failure 0")
    if returns:
        assert retry(attempt, on=Flaky, attempts=attempts, backoff=Backoff(1.0, 60.0),
                     sleep=sleeps.append, failed=first) == "done"
    else:
        with pytest.raises(Flaky):
            retry(attempt, on=Flaky, attempts=attempts, backoff=Backoff(1.0, 60.0),
                  sleep=sleeps.append, failed=first)
    assert len(made) == calls and sleeps == slept
