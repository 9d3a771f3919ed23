"""`doctor` tells the truth about load: it watches long enough to see load that comes and goes,
names the busiest other processes, and says how often this host's stored measurements were noisy."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

from controller import doctor
from controller.store import db as store
from tests.conftest import Bench, Cli, MakeResult


def test_a_duty_cycle_shows_as_peaks() -> None:
    """Truth: a process busy 300 ms in every 1.2 s: a one-second look can miss it, a 3 s sample
    of 0.5 s steps sees it at its peak, and names it."""
    script = (
        "import time\n"
        "while True:\n"
        "    t = time.perf_counter()\n"
        "    while time.perf_counter() - t < 0.3: pass\n"
        "    time.sleep(0.9)\n"
    )
    burst = subprocess.Popen([sys.executable, "-c", script])
    try:
        time.sleep(0.2)
        steps, busiest = doctor.sample_load(3.0)
    finally:
        burst.kill()
        burst.wait()
    assert len(steps) == 6 and max(steps) >= 0.4, steps
    assert any(f"(pid {burst.pid})" in b for b in busiest), busiest


def test_doctor_names_the_busy_process_and_the_stored_noise(
    cli: Cli, bench: Bench, make_result: MakeResult
) -> None:
    here = socket.gethostname()
    with store.connect(bench.db) as con:
        for i, noisy in enumerate([True, True, False, True]):
            r = make_result(host=here, repetition=i + 1, batch_sizes=(1,))
            m = r.measurements[0].model_copy(
                update={"noisy": noisy, "other_cpu_cores": 1.0 if noisy else 0.0}
            )
            store.ingest(con, r.model_copy(update={"measurements": [m]}))
        store.ingest(con, make_result(host="elsewhere", batch_sizes=(1,)))
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        result = cli("doctor", "--sample-s", "1.5", "--json")
    finally:
        burner.kill()
        burner.wait()
    assert result.exit_code == 0, result.output
    found = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    load = found["other-load"]
    assert load["level"] == "warn" and f"(pid {burner.pid})" in load["found"] and "over 1.5s" in load["found"]
    noise = found["stored-noise"]
    assert noise["level"] == "warn" and f"3 of 4 measurements from {here}" in noise["found"]


def test_sample_length_is_checked(cli: Cli, bench: Bench) -> None:
    for bad in ("0", "-1", "601", "x"):
        result = cli("doctor", "--sample-s", bad)
        assert result.exit_code == 2 and "--sample-s" in result.output, result.output
