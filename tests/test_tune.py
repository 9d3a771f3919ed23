"""`bench-ctl tune` against a known truth: the null runner's landscape (schemas/frameworks/null.py)
has one optimum, a near-tie and a cliff; the race must find the optimum (or the near-tie, then
named as not significantly different), never answer a candidate significantly worse, and use at
most a third of a full grid's runs. Bad input is one line with a hint, exit 2, nothing stored."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.analysis import stats
from controller.run import tune
from controller.run.peak import Bracket
from schemas.frameworks.base import search_space
from schemas.frameworks.null import NULL_NEAR_TIE, NULL_OPTIMUM, NullOptions, null_landscape
from tests.conftest import SHORT_POLICY, TUNE_ONE_NULL, Bench, Cli

FAST = [
    "--set",
    "policy.min_time_s=0.2",
    "--set",
    "policy.max_time_s=0.6",
    "--set",
    "policy.warmup_min_s=0.05",
]


def _null_search(budget_s: float) -> tuple[tune.Search, list[tune.Candidate]]:
    """A search of the null landscape's 32 candidates, nothing planned (simulated trials)."""
    space = search_space(NullOptions, cores=2)
    defaults = {k: NullOptions.model_fields[k].default for k in space}
    cands = [
        tune.Candidate(
            "null", "null", {"knob_a": a, "knob_b": b}, 1, None, f"{a}-{b}", (a, b) == (0, 0), defaults
        )
        for a in space["knob_a"]
        for b in space["knob_b"]
    ]
    search = tune.Search(
        tune.TuneRequest(model="m", images=["null"], batch_sizes=[1], budget_s=budget_s), cands, None, True
    )
    return search, cands


def _simulated(seed: int, noise: float = 0.03) -> tuple[tune.Search, tune.TuneAnswer]:
    rng = np.random.default_rng(seed)
    search, _ = _null_search(1e9)

    def execute(c: tune.Candidate, rep: int) -> tune.Trial:
        value = (
            500 / null_landscape(c.options["knob_a"], c.options["knob_b"]) * math.exp(rng.normal(0, noise))
        )
        return tune.Trial(f"{c.key}-{rep}", value, value, 1000 / value, None, 0.01, False, None)

    tune.race(search, execute, lambda _: None)
    return search, tune.answer(search)


@pytest.mark.parametrize("seed", range(5))
def test_the_race_finds_the_known_optimum_with_a_third_of_the_grid(seed: int) -> None:
    search, answer = _simulated(seed)
    best = answer.images[0].best
    assert best is not None
    found = (best.options["knob_a"], best.options["knob_b"])
    assert found in (NULL_OPTIMUM, NULL_NEAR_TIE), answer.images[0]
    assert null_landscape(*found) <= 1 + stats.DEFAULT_MIN_EFFECT
    assert (
        search.runs_made <= answer.full_grid_runs * 0.4
    )  # a third in the median (benchmarks/tune_search.py)
    # The defaults (factor 1.40) get their runs: the tuned one is called faster than them.
    assert answer.images[0].default is not None and answer.images[0].default.runs == tune.FINAL_RUNS
    assert answer.images[0].verdict is not None and answer.images[0].verdict.startswith("faster")


def test_a_near_tie_is_reported_as_not_significantly_different() -> None:
    """With no run-to-run noise the optimum and the near-tie (0.8 % apart, below the minimum
    effect) both survive: the answer names the other as a tie."""
    _, answer = _simulated(0, noise=0.0)
    im = answer.images[0]
    assert im.best is not None
    labels = {im.best.label, *im.ties}
    assert any("knob_a=5 knob_b=1" in x for x in labels) and any("knob_a=2 knob_b=3" in x for x in labels)


def test_noisy_runs_do_not_drop_a_candidate() -> None:
    c = tune.Candidate("null", "null", {}, 1, None, "k", False)
    c.trials.append(tune.Trial("r", 10.0, 10.0, 100.0, None, 0.01, True, None))
    assert tune.interval(c) is None


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--objective", "speed"], "unknown objective"),
        (["--bound", "p98<=20ms"], "no latency metric 'p98'"),
        (["--bound", "fast"], "not METRIC<=VALUE"),
        (["--budget", "0"], "above 0"),
        (["--budget", "soon"], "not a duration"),
        (["--precision", "any"], "accuracy floor"),
        (["--set", "ort:intra_op_threads=1"], "names image 'ort'"),
        (["--scenario", "server"], "needs a latency bound"),
        (["--scenario", "server", "--bound", "mean<=5ms"], "bound is on p99"),
        (["--scenario", "server", "--bound", "p99<=5ms", "--objective", "latency"], "no meaning"),
        (["--scenario", "server", "--bound", "p99<=5ms", "--set", "server.target_qps=5"], "tune sets"),
        (["--scenario", "single-stream"], "offline or the server"),
    ],
)
def test_bad_input_is_one_line_and_nothing_runs(
    cli: Cli, bench: Bench, fake_model: Path, args: list[str], needle: str
) -> None:
    r = cli("tune", "-m", "fake", "-i", "null", "--launcher", "local", *args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "hint" in lines[0], r.stderr
    assert bench.run_dirs() == [] and bench.count("runs") == 0


def test_an_image_without_a_search_space_is_refused(
    cli: Cli, bench: Bench, fake_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tune, "search_space", lambda model, cores, allow_precision=False: {})
    r = cli("tune", "-m", "fake", "-i", "null", "--launcher", "local")
    assert r.exit_code == 2 and "declares no options to search" in r.stderr
    assert bench.run_dirs() == []


def test_dry_run_prints_the_space_and_runs_nothing(cli: Cli, bench: Bench, fake_model: Path) -> None:
    r = cli("tune", "-m", "fake", "-i", "null", "--dry-run", "--json", "--launcher", "local")
    assert r.exit_code == 0, r.output
    [space] = json.loads(r.stdout)
    assert space["candidates"] == 32 and set(space["options"]) == {"knob_a", "knob_b"}
    assert bench.run_dirs() == []


def test_a_real_search_finds_the_optimum_and_a_second_call_reuses_it(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path
) -> None:
    """knob_b fixed at the optimum's: eight candidates over knob_a, the optimum 10 % ahead of the
    next. Every trial is a stored run of its cell; the second call makes none."""
    args = ["tune", "-m", "fake", "-i", "null", "--launcher", "local", "--set", "landscape=true"]
    args += ["--set", "work_us=3000", "--set", "knob_b=1", *FAST, "--budget", "10m", "--json"]
    plan = tmp_path / "tuned.toml"
    r = cli(*args, "--write-plan", str(plan))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    [im] = doc["images"]
    assert im["best"]["options"]["knob_a"] == NULL_OPTIMUM[0], im
    # Fewer trials than the grid (a third on a quiet host: benchmarks/tune_search.py; this shared
    # host's neighbours widen the run-to-run spread, so more candidates stay in longer).
    assert doc["trials_made"] < doc["full_grid_runs"]
    stored = bench.rows("SELECT count(*) FROM runs WHERE cell IS NOT NULL")[0][0]
    assert stored == doc["runs_made"]
    again = cli(*args)
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["runs_made"] == 0 and second["images"][0]["best"]["options"]["knob_a"] == NULL_OPTIMUM[0]
    assert "knob_a = 5" in plan.read_text()
    assert cli("sweep", str(plan), "--dry-run").exit_code == 0


def test_the_budget_ends_the_search(cli: Cli, bench: Bench, fake_model: Path) -> None:
    r = cli("tune", "-m", "fake", "-i", "null", "--launcher", "local", "--set", "landscape=true", *FAST,
            "--budget", "8s", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["stopped"] and "budget" in doc["stopped"]
    assert doc["seconds"] <= 8 * 1.1 + 5  # a trial started in budget may end after it
    assert doc["runs_made"] < doc["full_grid_runs"]


def test_a_small_budget_screens_one_option_at_a_time_then_combines_the_best() -> None:
    """When a run of every candidate does not fit, the defaults and one-option changes are
    measured first, and the combination of each option's best value is added: on the null
    landscape that combination is the optimum."""
    search, cands = _null_search(300)
    search.seconds_per_trial = [10.0]  # 32 candidates and the finalists' runs do not fit in 300 s
    assert not tune.affordable(search, None)
    lines: list[str] = []
    tune.screen(search, lines.append)
    kept = [c for c in cands if c.alive]
    assert len(kept) == 1 + 7 + 3  # the defaults, knob_a alone, knob_b alone
    for c in kept:
        v = 500 / null_landscape(c.options["knob_a"], c.options["knob_b"])
        c.trials.append(tune.Trial(c.key, v, v, 1000 / v, None, 0.01, False, None))
    tune.combine(search, lines.append)
    assert [c.options for c in cands if c.alive and not c.trials] == [{"knob_a": 5, "knob_b": 1}]
    assert any("combining" in line for line in lines)


# --------------------------------------------------------------------------- the server scenario

SERVER_WORK = ["--set", "work_us=20000", "--set", "work_us_per_sample=2000", "--set", "landscape=true"]
# SHORT_POLICY: a probe on this shared test host is not refused as noisy (noise is tested apart).
SERVER_FAST = [*SHORT_POLICY, "--set", "server.min_duration_s=0.5", "--set", "server.min_queries=24"]


def test_a_server_search_finds_the_batcher_that_holds_the_bound_at_the_highest_rate(
    cli: Cli, bench: Bench, fake_model: Path
) -> None:
    """An iteration of b samples takes 20 + 2 b ms: batch 1 serves at most 45 queries/s, batch 4
    at most 143. A trial is a peak search (every probe a stored run); max_batch=4 must win, each
    candidate's answer must be a rate that held (VALID, p99 under the bound), and the search's
    question is stored with its answer. A second call makes no runs."""
    args = ["tune", "-m", "fake", "-i", "null", "--launcher", "local", "--scenario", "server", "-b", "1,4"]
    args += ["--bound", "p99<=300ms", *SERVER_WORK, "--set", "knob_a=5", "--set", "knob_b=1"]
    args += ["--set", "server.max_delay_ms=2", *SERVER_FAST, "--budget", "10m", "--json"]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["scenario"] == "server" and doc["bound"] == "p99 <= 300 ms"
    [im] = doc["images"]
    assert im["best"]["batch_size"] == 4, im
    # The peak of batch 4 lies below its capacity (143/s) and above batch 1's (45/s).
    assert 45 < im["best"]["mean"] < 143 * 1.05, im
    held = bench.rows(
        "SELECT max(target_qps) FROM results WHERE scenario = 'server' AND valid AND latency_p99_ms <= 300 "
        "AND batch_size = 4"
    )[0][0]
    assert im["best"]["mean"] <= held
    rows = bench.rows("SELECT scenario, objective, bound, bound_ms, len(cells), winner FROM searches")
    assert rows == [("server", "throughput", "p99 <= 300 ms", 300.0, 2, doc["winner"]["label"])]
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["runs_made"] == 0


def test_a_peak_search_gives_up_under_the_floor_of_its_image() -> None:
    """A candidate whose rates do not hold is walked down no further than the floor (half the
    image's best peak): four probes instead of PEAK_MAX_PROBES, and it is dropped as too slow,
    not as infeasible. Above the floor the search is the usual one."""
    capacity = 7.0  # the rate this candidate holds at most; the image's best holds 20
    bracket = Bracket(19.0, tune.NEAR_STEP, floor=tune.PEAK_FLOOR * 20.0)
    while not bracket.done:
        rate = bracket.next_rate()
        assert rate >= tune.PEAK_FLOOR * 20.0 - 1e-9
        bracket.record(rate, rate <= capacity)
    assert bracket.floored and bracket.low is None and len(bracket.rates) <= 4, bracket.rates
    assert bracket.rates[-1] == pytest.approx(10.0)
    bound = tune.Bound("p99", "latency_p99_ms", 300.0)
    outcome = tune.peak_outcome(bracket, [], bound)
    assert isinstance(outcome, tune.Refused) and outcome.reason.startswith("too slow"), outcome
    c = tune.Candidate("null", "null", {"knob_a": 7}, 1, None, "k", False)
    tune.refuse(c, outcome.reason)
    assert c.dropped == outcome.reason and c.failed is None
    # A candidate that holds above the floor is bisected to its peak as without one.
    for capacity in (12.0, 30.0):
        bracket = Bracket(19.0, tune.NEAR_STEP, floor=10.0)
        while not bracket.done:
            rate = bracket.next_rate()
            bracket.record(rate, rate <= capacity)
        assert bracket.narrow and not bracket.floored
        assert bracket.low is not None and bracket.low <= capacity < bracket.low * 1.06


def test_the_defaults_have_no_floor() -> None:
    """The defaults' peak is what the tuned one is measured against: it is searched to its end."""
    search, cands = _null_search(60)
    for c in cands:
        if (c.options["knob_a"], c.options["knob_b"]) in ((0, 0), (5, 1)):
            c.trials.append(tune.Trial(c.key, 40.0, 40.0, 25.0, 100.0, None, False, None))
    [default] = [c for c in cands if c.is_default]
    assert tune.peak_floor(default, search) is None
    assert tune.peak_floor(cands[-1], search) == pytest.approx(20.0)


def test_a_noisy_trial_made_again_counts_once_when_a_search_resumes(
    cli: Cli, bench: Bench, fake_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One candidate (both knobs fixed): its first run comes out noisy and is made again, and the
    call is interrupted after three stored runs (two trials). The second call counts two trials,
    as the first did, and makes the three left: five clean runs, not four."""
    from controller.run import pipeline
    from schemas import RunResult

    real = pipeline.keep
    kept: list[str] = []

    def keep(result: RunResult, run_dir: Path, paths: Any) -> RunResult:
        if result.status == "ok" and not kept:
            result = result.model_copy(
                update={"measurements": [m.model_copy(update={"noisy": True}) for m in result.measurements]}
            )
        out = real(result, run_dir, paths)
        kept.append(result.run_id)
        if interrupt and len(kept) == 3:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(pipeline, "keep", keep)
    interrupt = True
    args = list(TUNE_ONE_NULL)
    args += [*FAST, "--budget", "10m", "--json"]
    first = cli(*args)
    assert first.exit_code == 130, first.output
    assert bench.rows("SELECT repetition, noisy FROM results ORDER BY started_at") == [
        (1, True), (1, False), (2, False)
    ]  # fmt: skip
    interrupt = False
    second = cli(*args)
    assert second.exit_code == 0, second.output
    doc = json.loads(second.stdout)
    assert doc["runs_made"] == 3, doc
    assert doc["images"][0]["best"]["runs"] == tune.FINAL_RUNS


def test_the_budget_is_weighed_between_the_probes_of_a_peak_search(
    cli: Cli, bench: Bench, fake_model: Path
) -> None:
    """A server trial is a peak search of several probes: a budget shorter than one search ends it
    between two probes (not after its last), and the next call goes on with the same search."""
    args = ["tune", "-m", "fake", "-i", "null", "--launcher", "local", "--scenario", "server", "-b", "1"]
    args += ["--bound", "p99<=300ms", *SERVER_WORK, "--set", "knob_a=5", "--set", "knob_b=1"]
    args += ["--set", "server.max_delay_ms=2", *SERVER_FAST, "--json"]
    r = cli(*args, "--budget", "2s")
    assert r.exit_code == 1, r.output  # no answer yet
    doc = json.loads(r.stdout)
    assert doc["stopped"] and "probe" in doc["stopped"], doc["stopped"]
    assert doc["trials_made"] == 0 and doc["runs_made"] >= 1
    first = bench.rows("SELECT count(*) FROM results WHERE repetition = 1")[0][0]
    assert first == doc["runs_made"]
    again = cli(*args, "--budget", "10m")
    assert again.exit_code == 0, again.output
    after = bench.rows("SELECT count(*) FROM results WHERE repetition = 1")[0][0]
    # The first search went on from its stored probes (one search of repetition 1, not two).
    assert after > first
    rates = [
        r[0] for r in bench.rows("SELECT target_qps FROM results WHERE repetition = 1 ORDER BY started_at")
    ]
    replay = Bracket(rates[0], tune.COLD_STEP)
    held = dict(bench.rows("SELECT target_qps, valid AND NOT coalesce(noisy, false) FROM results"))
    for rate in rates:
        assert rate == pytest.approx(replay.next_rate(), rel=1e-5)
        replay.record(rate, bool(held[rate]))
    assert replay.done


def test_a_probe_lasts_long_enough_for_its_bound_tail_to_be_no_shortfall() -> None:
    """A server run is INVALID when its achieved rate falls QPS_TOLERANCE short of the offered
    one, and a run within a bound L can end up to L after its last arrival: a probe lasts at
    least L / QPS_TOLERANCE (2 s at the least), so that tail is never the shortfall that fails it."""
    from schemas.spec import QPS_TOLERANCE

    short = tune.probe_policy(tune.parse_bound("p99<=15ms"))
    assert short["server.min_duration_s"] == tune.PROBE_POLICY["server.min_duration_s"] == "2"
    loose = tune.probe_policy(tune.parse_bound("p99<=400ms"))
    assert float(loose["server.min_duration_s"]) == pytest.approx(0.4 / QPS_TOLERANCE)
    # Within the bound, the tail's shortfall is at most L / (T + L) of the offered rate.
    seconds = float(loose["server.min_duration_s"])
    assert 1 - seconds / (seconds + 0.4) <= QPS_TOLERANCE


def _probe(rate: float, held: bool) -> tune.Probe:
    return tune.Probe(rate, held, False, f"r{rate}", rate, 100.0, 300.0 if held else 500.0, None)


def test_a_stored_search_that_ended_at_its_floor_replays_as_ended() -> None:
    """A search that came down to its floor and failed there ended, whatever the image's best
    peak is when a later call replays it (a lower best would give a lower floor, and the replay
    would probe on down). A descent that kept to its step did not end at a floor."""
    # The floor was 23: the step would have led from 27.2 down to 21.76, and the search stopped at 23.
    floored = [_probe(34.0, False), _probe(27.2, False), _probe(23.0, False)]
    bracket, known = tune.replay(floored)
    assert known and bracket.step == tune.NEAR_STEP
    assert bracket.done and bracket.floored and bracket.floor == 23.0
    outcome = tune.peak_outcome(bracket, floored, tune.parse_bound("p99<=400ms"))
    assert isinstance(outcome, tune.Refused) and outcome.reason.startswith("too slow")
    # Cold from 10 queries/s, failed there: the second rate was the floor (no step of 4 leads there).
    bracket, known = tune.replay([_probe(10.0, False), _probe(6.0, False)])
    assert bracket.floored and not known
    # The defaults' descent keeps to its step: not floored, and it goes on from where it was.
    descent = [_probe(34.0, False), _probe(27.2, False), _probe(21.76, False)]
    bracket, known = tune.replay(descent)
    assert known and not bracket.done and bracket.floor is None
    assert bracket.next_rate() == pytest.approx(21.76 / tune.NEAR_STEP)
    # A warm search's step (1.1) is read back too.
    bracket, known = tune.replay([_probe(30.0, True), _probe(33.0, False)])
    assert known and bracket.step == tune.WARM_STEP and bracket.next_rate() == pytest.approx(31.5)


def test_a_screened_search_finds_the_optimum_and_a_second_call_makes_no_trials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A budget that pays for no full first round screens one option at a time, then combines
    the best values: on the null landscape, the optimum, which gets its five runs although it
    joined after round one. A second call over the same stored trials (new candidates, as
    `load_trials` gives them) finds the search done: it keeps the candidates measured, combines
    nothing new, and makes no trial."""
    monkeypatch.setattr(tune, "estimate_s", lambda search, past: 10.0)  # 32 trials of 10 s > 300 s

    def execute(c: tune.Candidate, rep: int) -> tune.Trial:
        made.append(c.key)
        v = 500 / null_landscape(c.options["knob_a"], c.options["knob_b"]) * (1 + 0.002 * rep)
        return tune.Trial(f"{c.key}-{rep}", v, v, 1000 / v, None, 0.01, False, None)

    made: list[str] = []
    search, cands = _null_search(300)
    tune.race(search, execute, lambda _: None)
    assert search.screened and made
    # Every candidate screening kept had its first-round trial (the one whose turn decided the
    # screening too), so the combination is the optimum, and the race finds it.
    best = tune.answer(search).images[0].best
    assert best is not None and (best.options["knob_a"], best.options["knob_b"]) == NULL_OPTIMUM
    assert best.runs == tune.FINAL_RUNS
    again, fresh = _null_search(300)
    for old, new in zip(cands, fresh, strict=True):
        new.trials = list(old.trials)
    # Screening keeps what was measured: the combination the first call made, with its runs.
    tune.screen(again, lambda _: None)
    optimum = next(c for c in fresh if c.options == {"knob_a": 5, "knob_b": 1})
    assert optimum.trials and optimum.alive
    live = [c.key for c in fresh if c.alive]
    tune.combine(again, lambda _: None)  # a combination was measured: none is added
    assert [c.key for c in fresh if c.alive] == live
    again, fresh = _null_search(300)
    for old, new in zip(cands, fresh, strict=True):
        new.trials = list(old.trials)
    made.clear()
    tune.race(again, execute, lambda _: None)
    assert made == []
    again_best = tune.answer(again).images[0].best
    assert again_best is not None and again_best.label == best.label
