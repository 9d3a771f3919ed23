"""Noise measured where it happens: the probe's readings, the windows the steady state leaves out
when the runner is starved, and the wait for a quiet host. A fake clock and a fake probe make
the loop deterministic; one test starves a real process of its core to see the kernel's figure."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from runners.core import noise
from runners.core.measure import steady_state, summarize
from schemas import MeasurementPolicy
from tests.conftest import Bench, Cli
from tests.test_measure import MS, FakeClock, policy


class FakeProbe:
    """Samples as the kernel would give them on the fake clock: one thread, runnable all the
    time, waiting for a CPU `starved(t)` of it; other processes keep `other(t)` cores busy (by
    default what the runner waited for: the other load took it)."""

    def __init__(
        self,
        clock: FakeClock,
        starved: Callable[[int], float],
        other: Callable[[int], float] | None = None,
        schedstat: bool = True,
    ) -> None:
        self.clock, self.starved, self.schedstat = clock, starved, schedstat
        self.other = starved if other is None else other
        self.cores = 2
        self.ran = self.waited = self.busy = 0.0
        self.at = 0

    def sample(self, wall_ns: int | None = None) -> noise.Sample:
        now = self.clock.now if wall_ns is None else wall_ns
        wall = now - self.at
        share = self.starved(self.at)
        self.waited += share * wall
        self.ran += (1 - share) * wall
        self.busy += (1 - share + self.other(self.at)) * wall
        self.at = now
        threads = {7: (int(self.ran), int(self.waited))} if self.schedstat else {}
        return noise.Sample(now, int(self.busy), int(self.ran), threads)


def starved_between(low_ms: int, high_ms: int) -> Callable[[int], float]:
    return lambda t: 0.5 if low_ms * MS <= t < high_ms * MS else 0.0


def test_between_two_samples() -> None:
    a = noise.Sample(0, 0, 0, {1: (0, 0), 2: (10, 0)})
    b = noise.Sample(100, 150, 60, {1: (40, 20), 3: (5, 5)})  # thread 2 ended, 3 started
    r = noise.between(a, b)
    assert r.wall_ns == 100 and r.other_cores == pytest.approx(0.9)  # (150 - 60) / 100
    assert r.starved_share == pytest.approx(20 / 60) and r.runnable_ns == 60
    assert noise.between(a, noise.Sample(100, None, 60, {})) == noise.Reading(100, None, None)


def test_a_runner_that_starves_itself_is_not_noisy() -> None:
    """Its threads outnumber the cores (ONNX Runtime's parallel mode) while nothing else runs: the
    wait is the configuration's own cost, measured, not other load to leave out."""
    fc = FakeClock(lambda i: MS)
    p = policy(min_time_s=0.3, max_time_s=1.0)
    probe = FakeProbe(fc, lambda t: 0.34, other=lambda t: 0.01)
    m = summarize(1, steady_state(fc.step, p, fc.clock, probe=probe), p)
    assert not m.noisy and not m.windows_discarded
    assert m.starved_share == pytest.approx(0.34)


def test_proc_stat_lines_of_the_cores_given() -> None:
    text = (
        "cpu  100 0 50 900 10 0 5 0 0 0\n"
        "cpu0 60 0 30 400 5 0 5 0 0 0\n"
        "cpu1 40 0 20 500 5 0 0 0 0 0\n"
        "intr 12345\n"
    )
    assert noise._cpu_lines(text, None) == 155  # everything but idle (900) and iowait (10)
    assert noise._cpu_lines(text, {1}) == 60
    assert noise._cpu_lines(text, {0, 1}) == 155
    assert noise._cpu_lines(text, {5}) is None


def test_starved_windows_are_left_out_and_the_loop_measures_longer() -> None:
    """Truth: 1 ms per iteration when the runner has its core, 2 ms while it is starved (200 to
    400 ms). The figures are those of the clean windows alone: exactly 1000 iterations/s, the
    starved stretch named and timed, and the loop ran past min_time_s to get its clean time."""
    fc = FakeClock(lambda i: MS)
    probe = FakeProbe(fc, starved_between(200, 400))

    def step() -> None:
        fc.now += MS * (2 if 200 * MS <= fc.now < 400 * MS else 1)

    p = policy(min_time_s=0.5, max_time_s=2.0)
    state = steady_state(step, p, fc.clock, probe=probe)
    m = summarize(1, state, p)
    assert state.stable and not m.noisy
    assert m.throughput_sps == pytest.approx(1000.0) and m.latency_max_ms == pytest.approx(1.0)
    assert m.windows_discarded == 20 and m.discarded_s == pytest.approx(0.2, abs=0.02)
    assert m.discarded_iterations == 100 and m.iterations == len(state.latencies_ns) - 100
    assert m.duration_s >= 0.5 and state.elapsed_ns >= 700 * MS
    assert m.starved_share == 0.0 and m.other_cpu_cores == pytest.approx(0.0)


def test_a_runner_starved_throughout_is_noisy() -> None:
    fc = FakeClock(lambda i: 2 * MS)
    p = policy(min_time_s=0.2, max_time_s=0.5)
    m = summarize(1, steady_state(fc.step, p, fc.clock, probe=FakeProbe(fc, lambda t: 0.4)), p)
    assert m.noisy and not m.stable
    assert m.iterations == 250 and m.windows_discarded == m.windows  # the figures are all of them
    assert m.throughput_sps == pytest.approx(500.0)


def test_slightly_starved_windows_are_kept() -> None:
    fc = FakeClock(lambda i: MS)
    p = policy()  # the default share, 2 %
    m = summarize(1, steady_state(fc.step, p, fc.clock, probe=FakeProbe(fc, lambda t: 0.015)), p)
    assert not m.noisy and m.windows_discarded == 0
    assert m.starved_share == pytest.approx(0.015)


def test_without_thread_figures_other_load_decides() -> None:
    """No schedstat (another kernel): a window is judged by the other processes' cores instead."""
    fc = FakeClock(lambda i: MS)
    busy = FakeProbe(fc, lambda t: 0.0, other=lambda t: 1.0 if t < 300 * MS else 0.0, schedstat=False)
    p = policy(noise_cores=0.25)
    m = summarize(1, steady_state(fc.step, p, fc.clock, probe=busy), p)
    assert m.windows_discarded == 30 and not m.noisy and m.starved_share is None
    assert m.other_cpu_cores == pytest.approx(0.0)


class StubProbe:
    """Other processes keep `loads[i]` cores busy during the i-th look at the host."""

    cores = 2

    def __init__(self, loads: list[float]) -> None:
        self.loads = loads
        self.looks = 0
        self.t = 0

    def sample(self, wall_ns: int | None = None) -> noise.Sample:
        self.t += 1
        load = self.loads[min(self.looks, len(self.loads) - 1)]
        if self.t % 2 == 0:
            self.looks += 1
            return noise.Sample(int(1e8), int(load * 1e8), 0)
        return noise.Sample(0, 0, 0)


def test_the_quiet_wait() -> None:
    # Two threads on two cores leave nothing to others: 0.6 cores busy is too much, 0.2 is fine.
    probe = StubProbe([0.6, 0.6, 0.2])
    waited = noise.wait_for_quiet(probe, 5.0, threads=2, noise_cores=0.25)  # type: ignore[arg-type]
    assert probe.looks == 3 and waited == pytest.approx(0.3, abs=0.15)
    assert noise.wait_for_quiet(StubProbe([0.2]), 5.0, 2, 0.25) == 0.0  # type: ignore[arg-type]
    # One thread on two cores: a whole core may be busy elsewhere.
    assert noise.wait_for_quiet(StubProbe([1.2]), 5.0, 1, 0.25) == 0.0  # type: ignore[arg-type]
    bounded = StubProbe([2.0])
    started = time.perf_counter()
    noise.wait_for_quiet(bounded, 0.25, 2, 0.25)  # type: ignore[arg-type]
    assert time.perf_counter() - started < 1.0 and bounded.looks <= 4
    assert noise.wait_for_quiet(StubProbe([2.0]), 0.0, 2, 0.25) == 0.0  # type: ignore[arg-type]


def _spin(seconds: float) -> None:
    os.sched_setaffinity(0, {0})
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _starved_share(out: multiprocessing.Queue[float]) -> None:
    os.sched_setaffinity(0, {0})
    probe = noise.Probe()
    a = probe.sample()
    _spin(1.0)
    out.put(noise.between(a, probe.sample()).starved_share or 0.0)


@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"), reason="the kernel keeps no schedstat")
def test_the_kernel_shows_a_process_sharing_its_core() -> None:
    """Two busy processes pinned to one core get about half of it each: the probe of one of
    them reads a starved share near 0.5 (at least 0.3 on a host busy with other work too)."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[float] = ctx.Queue()
    rival = ctx.Process(target=_spin, args=(1.5,))
    rival.start()
    time.sleep(0.2)
    probed = ctx.Process(target=_starved_share, args=(out,))
    probed.start()
    share = out.get(timeout=30)
    probed.join()
    rival.join()
    assert 0.3 <= share <= 0.8, share
    alone = noise.Probe()
    a = alone.sample()
    time.sleep(0.05)
    assert noise.between(a, alone.sample()).starved_share is not None
    alone.close()


def test_policy_bounds() -> None:
    assert MeasurementPolicy().quiet_wait_s == 1.0 and MeasurementPolicy().starved_share == 0.02
    for bad in ({"quiet_wait_s": -1}, {"starved_share": 1.5}):
        with pytest.raises(ValueError):
            MeasurementPolicy.model_validate(bad)


def _judged(short_policy: list[str]) -> list[str]:
    """The tests' short policy, with starved windows judged by the default share again."""
    kept = [v for v in short_policy[1::2] if not v.startswith("policy.starved_share")]
    return [x for v in kept for x in ("--set", v)]


@pytest.mark.usefixtures("null_env", "fake_model")
def test_a_starved_repetition_is_made_again_and_left_out(
    cli: Cli, bench: Bench, short_policy: list[str]
) -> None:
    """Truth: a busy loop shares the one core the runner is given, so every run is starved
    (about half the core): each of the two repetitions is made again once, every run is stored
    with its figures, the table shows them, and the summary gives no verdict-worthy cell."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    mine = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(burner.pid, {min(mine)})
        os.sched_setaffinity(0, {min(mine)})  # the runners inherit it
        result = cli(
            "run", "--image", "null", "--model", "fake", "--launcher", "local", "-b", "1",
            *_judged(short_policy), "--set", "work_us=500", "--set", "policy.noisy_reruns=1",
            "--repeat", "2", env={"COLUMNS": "250"},
        )  # fmt: skip
    finally:
        os.sched_setaffinity(0, mine)
        burner.kill()
        burner.wait()
    assert result.exit_code == 0, result.output
    assert result.stderr.count("measuring it again") == 2 and "still noisy" in result.stderr
    rows = bench.rows(
        "SELECT repetition, noisy, starved_share, windows_discarded, discarded_s, other_cpu_cores "
        "FROM results ORDER BY started_at"
    )
    assert [r[0] for r in rows] == [1, 1, 2, 2] and all(r[1] for r in rows), rows
    assert all(r[2] is not None and r[2] > 0.05 and r[3] >= 1 and r[4] > 0 for r in rows), rows
    assert "noisy:" in result.stdout and "starved" in result.stdout and "left out" in result.stdout


def test_a_loop_cut_short_by_max_iterations_is_not_noisy() -> None:
    """Fast iterations reach max_iterations before min_time_s: unstable, but no window was
    starved, so nothing says the host was busy."""
    fc = FakeClock(lambda i: MS // 100)
    p = policy(max_iterations=5000, min_time_s=0.5)
    m = summarize(1, steady_state(fc.step, p, fc.clock, probe=FakeProbe(fc, lambda t: 0.0)), p)
    assert m.iterations == 5000 and not m.stable and m.noisy is False and m.windows_discarded == 0


def test_a_few_clean_windows_make_a_figure_shorter_than_asked() -> None:
    """Truth: the runner has its core for the first 30 ms only (three 10 ms windows), then is
    starved to the end. Three clean windows (stable_windows) make an unbiased figure, shorter than
    min_time_s: kept, flagged unstable, not noisy; two would not be enough."""
    for clean_ms, noisy in ((30, False), (20, True)):
        fc = FakeClock(lambda i: MS)

        def starved(t: int, c: int = clean_ms) -> float:
            return 0.0 if t < c * MS else 0.5

        probe = FakeProbe(fc, starved)
        p = policy(min_time_s=0.2, max_time_s=0.5)
        m = summarize(1, steady_state(fc.step, p, fc.clock, probe=probe), p)
        assert m.noisy is noisy and not m.stable
        if not noisy:
            assert m.windows == 3 and m.iterations == 30 and m.duration_s == pytest.approx(0.03)
