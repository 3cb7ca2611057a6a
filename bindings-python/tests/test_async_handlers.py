"""`async def` handlers run as they would behind a network hop: in an asyncio
task of their own, with a clean context (``contextvars.Context()``), never
inside the submitter's task or context."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import sys
import threading
from typing import Any, Dict, List, Optional

import pytest

import packetflow
from packetflow import Context, Reactor

from .conftest import wait_for

SEEN_BY = contextvars.ContextVar("SEEN_BY", default="unset")


async def test_a_handler_runs_in_one_task_of_its_own(reactor: Reactor) -> None:
    tasks: List[Optional["asyncio.Task[Any]"]] = []

    @reactor.handler("df", "tasks")
    async def record(data: Any, ctx: Context) -> Any:
        tasks.append(asyncio.current_task())
        await asyncio.sleep(0)
        tasks.append(asyncio.current_task())
        await asyncio.sleep(0.01)
        tasks.append(asyncio.current_task())
        return data

    submitter = asyncio.current_task()
    assert await reactor.call("df", "tasks", 1) == 1
    assert len(tasks) == 3
    assert tasks[0] is not None
    assert tasks[0] is not submitter
    assert tasks[0] is tasks[1] is tasks[2]
    # A handler that never suspends gets a task too.

    @reactor.handler("df", "quick")
    async def quick(data: Any, ctx: Context) -> Any:
        return asyncio.current_task() is submitter

    assert await reactor.call("df", "quick") is False


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in 3.11")
async def test_asyncio_timeout_inside_a_handler_times_out_the_handler(reactor: Reactor) -> None:
    @reactor.handler("df", "bounded")
    async def bounded(data: Any, ctx: Context) -> Any:
        try:
            async with asyncio.timeout(0.05):  # type: ignore[attr-defined,unused-ignore]
                await asyncio.sleep(5)
        except TimeoutError:
            return "own timeout"
        return "slept"

    submitter = asyncio.current_task()
    assert submitter is not None
    assert await asyncio.wait_for(reactor.call("df", "bounded"), 5) == "own timeout"
    assert submitter.cancelling() == 0  # type: ignore[attr-defined,unused-ignore]


async def test_a_handler_does_not_see_the_submitters_context(reactor: Reactor) -> None:
    @reactor.handler("df", "context")
    async def context(data: Any, ctx: Context) -> Any:
        before = SEEN_BY.get()
        SEEN_BY.set(f"handler {data}")
        await asyncio.sleep(0)
        return [before, SEEN_BY.get()]

    SEEN_BY.set("submitter")
    assert await reactor.call("df", "context", 1) == ["unset", "handler 1"]
    # What a handler sets stays in its own context: not in the submitter's,
    # nor in the next call's.
    assert SEEN_BY.get() == "submitter"
    assert await reactor.call("df", "context", 2) == ["unset", "handler 2"]


async def test_each_sync_handler_call_gets_a_clean_context() -> None:
    def context(data: Any, ctx: Context) -> Any:
        before = SEEN_BY.get()
        SEEN_BY.set(f"handler {data}")
        return before

    # One handler thread: both calls run on it, one after the other.
    async with Reactor(name="sync-context", handler_threads=1) as r:
        r.register("df", "sync-context", context)
        SEEN_BY.set("submitter")
        assert await r.call("df", "sync-context", 1) == "unset"
        assert await r.call("df", "sync-context", 2) == "unset"


def test_a_handler_does_not_see_the_context_it_was_registered_in() -> None:
    """Clean means clean: not a copy of the registering code's context
    either (a handler bound to a loop of another thread, reached from this
    one, runs there in a fresh context)."""
    r = Reactor(name="registered-context")
    other = asyncio.new_event_loop()
    ready = threading.Event()

    async def register() -> None:
        SEEN_BY.set("registrar")

        @r.handler("df", "there")
        async def there(data: Any, ctx: Context) -> Any:
            return SEEN_BY.get()

    def run_other() -> None:
        other.run_until_complete(register())
        ready.set()
        other.run_forever()

    t = threading.Thread(target=run_other, daemon=True)
    t.start()
    try:
        assert ready.wait(5)
        assert r.call_sync("df", "there") == "unset"
    finally:
        r.stop_sync()
        other.call_soon_threadsafe(other.stop)
        t.join(5)
        other.close()


async def test_a_handler_that_cancels_its_own_task_fails_with_pf500(reactor: Reactor) -> None:
    @reactor.handler("df", "self-cancel")
    async def self_cancel(data: Any, ctx: Context) -> Any:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(1)
        return "not cancelled"

    submitter = asyncio.current_task()
    assert submitter is not None
    with pytest.raises(packetflow.HandlerError) as info:
        await asyncio.wait_for(reactor.call("df", "self-cancel"), 5)
    assert info.value.code == "PF500"
    assert info.value.message == "df:self-cancel was cancelled"
    assert not submitter.cancelled()
    if sys.version_info >= (3, 11):
        assert submitter.cancelling() == 0  # type: ignore[attr-defined,unused-ignore]


async def test_cancelling_a_handlers_task_from_outside_answers_pf500(reactor: Reactor) -> None:
    started = asyncio.Event()
    handler_tasks: Dict[str, "asyncio.Task[Any]"] = {}

    @reactor.handler("df", "hold")
    async def hold(data: Any, ctx: Context) -> Any:
        task = asyncio.current_task()
        assert task is not None
        handler_tasks["hold"] = task
        started.set()
        await asyncio.Event().wait()

    pending = asyncio.ensure_future(reactor.submit("df", "hold"))
    await wait_for(started)
    handler_tasks["hold"].cancel()
    res = await asyncio.wait_for(pending, 5)
    assert res.error is not None
    assert (res.error.code, res.error.message) == ("PF500", "df:hold was cancelled")


async def test_a_handler_that_does_not_suspend_answers_inside_submit(reactor: Reactor) -> None:
    """The handler's task takes its first step at once (as Python 3.12's
    eager tasks do), still as its own task: no turn of the loop is needed
    when it answers without suspending."""
    submitter = asyncio.current_task()

    @reactor.handler("df", "at-once")
    async def at_once(data: Any, ctx: Context) -> Any:
        task = asyncio.current_task()
        return task is not None and task is not submitter and task.get_name() == "df:at-once"

    pending = reactor.submit("df", "at-once")
    assert pending.done()  # type: ignore[attr-defined]
    assert (await pending).data is True


async def test_keyboard_interrupt_raised_by_a_handler_goes_on_after_the_answer(reactor: Reactor) -> None:
    @reactor.handler("df", "interrupt")
    async def interrupt(data: Any, ctx: Context) -> Any:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reactor.submit("df", "interrupt")
    stats = reactor.stats()
    assert stats["in_flight"] == 0
    assert [(h["count"], h["errors"]) for h in stats["handlers"]] == [(1, 1)]


async def test_without_an_eager_first_step_a_handler_still_runs_in_its_own_task() -> None:
    """When the loop's newest ready handle is not the task's step (here a
    task factory that schedules something after making the task), the step
    is left to the loop: the handler answers a turn later, in its own task
    and context all the same."""
    loop = asyncio.get_running_loop()
    scheduled_after: List["asyncio.Task[Any]"] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> "asyncio.Task[Any]":
        task = asyncio.Task(coro, loop=loop, **kwargs)
        loop.call_soon(scheduled_after.append, task)
        return task

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        async with Reactor(name="no-eager") as r:
            submitter = asyncio.current_task()

            @r.handler("df", "later")
            async def later(data: Any, ctx: Context) -> Any:
                task = asyncio.current_task()
                await asyncio.sleep(0)
                return [task is asyncio.current_task(), task is not submitter, SEEN_BY.get()]

            SEEN_BY.set("submitter")
            pending = r.submit("df", "later")
            assert not pending.done()  # type: ignore[attr-defined]
            assert (await asyncio.wait_for(pending, 5)).data == [True, True, "unset"]
            assert [t.get_name() for t in scheduled_after] == ["df:later"]
    finally:
        loop.set_task_factory(None)


class AsyncCallable:
    """An object whose ``__call__`` is ``async def``."""

    def __init__(self) -> None:
        self.seen: List[Any] = []

    async def __call__(self, data: Any, ctx: Context) -> Any:
        self.seen.append((asyncio.current_task(), SEEN_BY.get()))
        if data == "suspend":
            await asyncio.sleep(0)
        return data


async def test_a_callable_object_and_a_partial_run_in_a_task_of_their_own(reactor: Reactor) -> None:
    handler = AsyncCallable()
    reactor.register("df", "object", handler)

    async def tagged(tag: str, data: Any, ctx: Context) -> Any:
        return [tag, SEEN_BY.get(), asyncio.current_task() is not submitter]

    reactor.register("df", "partial", functools.partial(tagged, "p"))
    submitter = asyncio.current_task()
    SEEN_BY.set("submitter")
    assert await reactor.call("df", "object", "now") == "now"
    assert await reactor.call("df", "object", "suspend") == "suspend"
    assert [(task is not submitter, seen) for task, seen in handler.seen] == [(True, "unset")] * 2
    assert await reactor.call("df", "partial") == ["p", "unset", True]


async def test_a_handler_called_with_arguments_it_does_not_take_fails_with_pf500(reactor: Reactor) -> None:
    @reactor.handler("df", "no-args")
    async def no_args() -> Any:
        return "never"

    with pytest.raises(packetflow.HandlerError) as info:
        await reactor.call("df", "no-args")
    assert info.value.code == "PF500"
    assert info.value.message.startswith("TypeError: ")
    assert "no_args() takes 0 positional arguments" in info.value.message


async def test_handler_exceptions_are_answered_and_never_logged_as_unretrieved(reactor: Reactor) -> None:
    """A handler's exception, raised at once or after a suspension, becomes
    its packet's error, and its task ends well: asyncio has nothing to
    report when the task is collected."""
    loop = asyncio.get_running_loop()
    reported: List[Dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    @reactor.handler("df", "raises")
    async def raises(data: Any, ctx: Context) -> Any:
        if data:
            await asyncio.sleep(0)
        raise ValueError(f"bad {data}")

    try:
        for suspend in (False, True):
            with pytest.raises(packetflow.HandlerError) as info:
                await reactor.call("df", "raises", suspend)
            assert (info.value.code, info.value.message) == ("PF500", f"ValueError: bad {suspend}")
        await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
        assert reported == []
    finally:
        loop.set_exception_handler(None)


async def test_a_loop_in_debug_mode_or_with_its_own_call_soon_starts_handlers_eagerly_too() -> None:
    """The fast way to make a handler's task applies to a plain loop only;
    a loop in debug mode, or with a `call_soon` of its own, gets the same
    behaviour the usual way."""
    loop = asyncio.get_running_loop()
    submitter = asyncio.current_task()

    async def own_task(data: Any, ctx: Context) -> Any:
        task = asyncio.current_task()
        return task is not None and task is not submitter and task.get_name() == "df:own"

    scheduled: List[Any] = []

    def call_soon(callback: Any, *args: Any, context: Any = None) -> Any:
        scheduled.append(callback)
        return type(loop).call_soon(loop, callback, *args, context=context)

    for setup in ("debug", "own call_soon"):
        if setup == "debug":
            loop.set_debug(True)
        else:
            loop.call_soon = call_soon  # type: ignore[method-assign]
        try:
            async with Reactor(name="not-plain") as r:
                r.register("df", "own", own_task)
                pending = r.submit("df", "own")
                assert pending.done()  # type: ignore[attr-defined]
                assert (await pending).data is True
        finally:
            loop.set_debug(False)
            vars(loop).pop("call_soon", None)
    assert scheduled  # the task's step went through the loop's own call_soon


async def test_call_soon_made_while_a_handlers_task_is_made_is_not_lost(reactor: Reactor) -> None:
    """While the task of a handler is constructed, the loop's `call_soon`
    is briefly the binding's (it keeps the task's first step); any other
    call made meanwhile (here from a garbage-collector callback, run by
    the constructor's allocations) reaches the loop unchanged."""
    loop = asyncio.get_running_loop()
    during: List[bool] = []
    ran: List[int] = []

    def on_gc(phase: str, info: Dict[str, Any]) -> None:
        if phase == "start" and len(during) < 1000:
            during.append("call_soon" in vars(loop))
            loop.call_soon(ran.append, len(during))

    @reactor.handler("df", "plain")
    async def plain(data: Any, ctx: Context) -> Any:
        return data

    threshold = gc.get_threshold()
    gc.callbacks.append(on_gc)
    gc.set_threshold(1)
    try:
        for i in range(50):
            assert await reactor.call("df", "plain", i) == i
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(on_gc)
    for _ in range(10):
        await asyncio.sleep(0)
    assert any(during), "no collection ran while a task was constructed"
    assert sorted(ran) == list(range(1, len(during) + 1))
    assert "call_soon" not in vars(loop)


async def test_calls_in_flight_together_never_share_a_task(reactor: Reactor) -> None:
    """Tasks serve calls one after another: two calls suspended at the same
    time are in two tasks, and each keeps its own across its awaits."""
    release = asyncio.Event()
    seen: Dict[int, List[Any]] = {}

    @reactor.handler("df", "overlap")
    async def overlap(data: int, ctx: Context) -> Any:
        seen[data] = [asyncio.current_task()]
        await release.wait()
        seen[data].append(asyncio.current_task())
        return data

    pending = [asyncio.ensure_future(reactor.call("df", "overlap", i)) for i in range(3)]
    while len(seen) < 3:
        await asyncio.sleep(0)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(*pending), 5) == [0, 1, 2]
    tasks = [seen[i][0] for i in range(3)]
    assert len({id(t) for t in tasks}) == 3
    assert all(seen[i][0] is seen[i][1] for i in range(3))


async def test_what_a_call_sets_in_its_context_never_reaches_the_next_call(reactor: Reactor) -> None:
    @reactor.handler("df", "leaves-a-var")
    async def leaves_a_var(data: Any, ctx: Context) -> Any:
        before = SEEN_BY.get()
        if data == "set":
            SEEN_BY.set("left behind")
        elif data == "set-and-reset":
            SEEN_BY.reset(SEEN_BY.set("reset"))
        return before

    for data in ("set", "read", "set-and-reset", "read", "set", "read"):
        assert await reactor.call("df", "leaves-a-var", data) == "unset"


async def test_a_call_that_cancels_its_own_task_without_suspending_leaves_later_calls_unharmed(
    reactor: Reactor,
) -> None:
    @reactor.handler("df", "cancel-and-return")
    async def cancel_and_return(data: Any, ctx: Context) -> Any:
        task = asyncio.current_task()
        assert task is not None
        if data == "cancel":
            task.cancel()
        return data

    assert await reactor.call("df", "cancel-and-return", "first") == "first"
    assert await reactor.call("df", "cancel-and-return", "cancel") == "cancel"
    # The cancelled task does not serve again: these run and answer.
    for i in range(3):
        assert await reactor.call("df", "cancel-and-return", i) == i

    @reactor.handler("df", "suspends")
    async def suspends(data: Any, ctx: Context) -> Any:
        await asyncio.sleep(0)
        return data

    assert await asyncio.wait_for(reactor.call("df", "suspends", "after"), 5) == "after"


async def test_tasks_cancelled_between_calls_are_replaced(reactor: Reactor) -> None:
    """A task waiting for its next call can be cancelled like any other (here
    by code that cancels every other task); the next call gets a live one."""

    @reactor.handler("df", "after-cancel")
    async def after_cancel(data: Any, ctx: Context) -> Any:
        await asyncio.sleep(0)
        return [data, asyncio.current_task() is not None]

    assert await reactor.call("df", "after-cancel", 1) == [1, True]
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me]
    for t in others:
        t.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    assert all(t.done() for t in others)
    assert await asyncio.wait_for(reactor.call("df", "after-cancel", 2), 5) == [2, True]


def test_a_loop_run_to_its_end_finishes_every_task_quietly() -> None:
    """`asyncio.run` cancels the tasks left waiting for a next call, and
    nothing is reported: no pending task destroyed, no unretrieved error."""
    reported: List[Dict[str, Any]] = []

    async def main() -> List[Any]:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
        async with Reactor(name="run-to-end") as r:

            @r.handler("df", "some")
            async def some(data: Any, ctx: Context) -> Any:
                if data % 2:
                    await asyncio.sleep(0)
                return data

            return list(await asyncio.gather(*(r.call("df", "some", i) for i in range(20))))

    assert asyncio.run(main()) == list(range(20))
    gc.collect()
    assert reported == []
