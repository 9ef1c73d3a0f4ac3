"""Group commit: what arrives while a batch runs goes together in the next one; a
second batch runs beside the first only when it is full; every caller gets its own
result or its batch's error."""

from __future__ import annotations

import asyncio

import pytest

from gateway.batching import Batcher


class Recorder:
    def __init__(self, delay: float = 0.02) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_at_once = 0
        self.after: list[list[int]] = []
        self.delay = delay

    async def run(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await asyncio.sleep(self.delay)
        self.running -= 1
        if -1 in items:
            raise ValueError("bad batch")
        return [item * 10 for item in items]

    async def then(self, items: list[int]) -> None:
        self.after.append(list(items))


async def test_what_arrives_meanwhile_goes_in_the_next_batch() -> None:
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.run, name="test", then=recorder.then)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.005)  # the first batch is running
    results = await asyncio.gather(first, *(batcher.submit(i) for i in range(1, 6)))
    await batcher.close()
    assert results == [0, 10, 20, 30, 40, 50]
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]
    assert recorder.after == recorder.batches
    assert recorder.most_at_once == 1


async def test_partial_batches_wait_and_full_ones_run_side_by_side() -> None:
    recorder = Recorder(delay=0.05)
    batcher: Batcher[int, int] = Batcher(recorder.run, name="test", max_batch=4, concurrency=2)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.01)
    partial = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0.01)
    assert recorder.most_at_once == 1  # two waiting items are not worth a second batch
    full = [asyncio.create_task(batcher.submit(i)) for i in (3, 4)]
    await asyncio.gather(first, *partial, *full)
    await batcher.close()
    assert recorder.most_at_once == 2
    assert recorder.batches == [[0], [1, 2, 3, 4]]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.run, name="test")
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.005)
    bad = [asyncio.create_task(batcher.submit(i)) for i in (2, -1)]
    outcomes = await asyncio.gather(first, *bad, return_exceptions=True)
    later = await batcher.submit(3)
    await batcher.close()
    assert outcomes[0] == 10
    assert all(isinstance(outcome, ValueError) for outcome in outcomes[1:])
    assert later == 30


@pytest.mark.parametrize("weights", [[3, 3, 3], [5]])
async def test_batches_hold_up_to_max_batch_by_weight(weights: list[int]) -> None:
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(
        recorder.run, name="test", max_batch=4, weight=lambda item: item
    )
    blocker = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.005)
    await asyncio.gather(blocker, *(batcher.submit(w) for w in weights))
    await batcher.close()
    # Each later batch is as big as fits; one item heavier than the limit goes alone.
    assert recorder.batches[0] == [1]
    assert [sum(b) for b in recorder.batches[1:]] == weights
