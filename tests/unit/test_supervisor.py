"""The supervisor: a task that dies ends the process; side work stays bounded."""

from __future__ import annotations

import asyncio

from bjc.engine.supervisor import SideWork, Supervisor


async def test_a_crashed_task_fails_the_process():
    supervisor = Supervisor()

    async def watch() -> None:
        raise RuntimeError("watch broke")

    supervisor.spawn("pod-watch", watch())
    await asyncio.wait_for(supervisor.failed.wait(), 5)
    assert "pod-watch" in supervisor.reason and "watch broke" in supervisor.reason


async def test_a_forever_task_that_returns_fails_the_process_a_one_shot_does_not():
    supervisor = Supervisor()

    async def done() -> None:
        return None

    supervisor.spawn("lead", done(), forever=False)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not supervisor.failed.is_set()
    supervisor.spawn("schedule", done())
    await asyncio.wait_for(supervisor.failed.wait(), 5)
    assert supervisor.reason == "task schedule ended unexpectedly"


async def test_cancellation_and_shutdown_are_not_failures():
    supervisor = Supervisor()
    supervisor.spawn("a", asyncio.Event().wait())
    supervisor.spawn("b", asyncio.Event().wait())
    await supervisor.cancel("a")
    assert supervisor.get("a") is None and supervisor.get("b") is not None
    await supervisor.stop()
    assert supervisor.get("b") is None
    assert not supervisor.failed.is_set()


async def test_cancelling_the_canceller_is_not_swallowed():
    supervisor = Supervisor()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # takes its time to wind down

    supervisor.spawn("slow", stubborn())
    await asyncio.sleep(0)
    outer = asyncio.ensure_future(supervisor.cancel("slow"))
    await asyncio.sleep(0)
    outer.cancel()
    await asyncio.wait([outer])
    assert outer.cancelled()
    await supervisor.stop()


async def test_side_work_runs_bounded_and_refuses_past_its_backlog():
    work = SideWork(concurrency=2, backlog=3)
    gate = asyncio.Event()
    running = 0
    most = 0
    done: list[int] = []

    def job(i: int):
        async def run() -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await gate.wait()
            running -= 1
            done.append(i)

        return run

    accepted = [work.submit(job(i)) for i in range(3)]
    await asyncio.sleep(0)  # two start, one waits in the queue
    accepted += [work.submit(job(i)) for i in range(3, 7)]
    assert accepted == [True] * 5 + [False] * 2
    gate.set()
    await asyncio.wait_for(work.drain(), 5)
    assert sorted(done) == [0, 1, 2, 3, 4] and most == 2
    await work.close()
