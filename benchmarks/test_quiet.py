"""How quiet the machine was, and the allocator's state: on fake counters, clocks, /proc trees and NVML, so
that every verdict is tested without loading the machine or timing anything."""
import itertools
import json
import platform
import sys
from types import SimpleNamespace

import pytest
import torch

from mnistbench import allocator, machine, nvml, quiet, watch

TICKS = 100


def proc_stat(user=0, nice=0, system=0, idle=0, iowait=0, irq=0, softirq=0, steal=0, cores=2) -> str:
    """``/proc/stat`` as Linux writes it, in ticks: the machine's line, one line per CPU, and the rest."""
    total = f"cpu  {user} {nice} {system} {idle} {iowait} {irq} {softirq} {steal} 0 0"
    return "\n".join([total] + [f"cpu{n} 0 0 0 0 0 0 0 0 0 0" for n in range(cores)] + ["intr 1 0", "ctxt 42"])


def fake_readers(timeline, canary=(0.002,), gpu=None) -> quiet.Readers:
    """Readers that step through ``timeline``: one (seconds, own user, own system, switches, /proc/stat text)
    per reading of the counters; the canary's readings in seconds, in turn."""
    readings, canaries = iter(timeline), itertools.cycle(canary)
    current = {}

    def advance():
        current["now"] = next(readings)
        return current["now"]

    return quiet.Readers(clock=lambda: current["now"][0], usage=lambda: advance()[1:4], stat=lambda: current["now"][4],
                         ticks_per_second=TICKS, canary=lambda: next(canaries),
                         gpu=gpu or (lambda device: "no GPU here"))


def test_proc_stat_gives_the_machines_busy_and_steal_seconds_and_its_cpus():
    text = proc_stat(user=500, nice=10, system=200, idle=9000, iowait=300, irq=5, softirq=15, steal=70, cores=4)
    assert quiet.machine_times(text, TICKS) == (7.3, 0.7, 4)  # idle and iowait are not busy
    with pytest.raises(ValueError, match="no 'cpu' line"):
        quiet.machine_times("intr 1\n", TICKS)


def test_a_quiet_window_is_not_disturbed_and_says_what_it_measured():
    # 10 s on 2 CPUs: this process used 19 s of CPU, the machine 19.2 s in all: others 0.2 s, 1% of 20 s
    readers = fake_readers([(0.0, 0.0, 0.0, 0, proc_stat(user=0)), (10.0, 18.0, 1.0, 40, proc_stat(user=1800, system=120))])
    watcher = quiet.Watcher("cpu", readers)
    watcher.start()
    info = watcher.stop()
    assert not info["disturbed"] and info["disturbed_by"] == []
    found = info["quiet"]
    assert (found["seconds"], found["cpu_user_seconds"], found["cpu_system_seconds"]) == (10.0, 18.0, 1.0)
    assert (found["involuntary_switches"], found["cores"], found["others_cpu_seconds"]) == (40, 2, 0.2)
    assert (found["others_share"], found["steal_share"], found["canary_drift"]) == (0.01, 0.0, 0.0)
    assert found["limits"] == {"others_share": 0.03, "steal_share": 0.03, "canary_drift": 0.50,
                               "canary_over_stored": 0.50, "gpu_clock_events": list(quiet.GPU_SLOWDOWNS)}


def test_other_processes_and_steal_beyond_their_limits_disturb_a_case():
    # 10 s on 2 CPUs: others used 5 s (25%), the hypervisor took 1 s (5%)
    readers = fake_readers([(0.0, 0.0, 0.0, 0, proc_stat()), (10.0, 10.0, 0.0, 900, proc_stat(user=1500, steal=100))])
    watcher = quiet.Watcher("cpu", readers)
    watcher.start()
    info = watcher.stop()
    assert info["disturbed"] and info["disturbed_by"] == [
        "other processes used 25.0% of the machine's CPU time (limit 3%)",
        "the hypervisor took 5.0% of the CPU time (steal; limit 3%)"]


def test_evaluation_is_left_out_and_the_canary_is_read_before_between_and_after_the_rounds():
    """Two rounds with an evaluation paused between: a busy machine during the evaluation does not count;
    the canary is read at start, before the second round (not the first: start just read it) and at stop,
    and a drift of 55% between its readings disturbs the case."""
    timeline = [(0.0, 0.0, 0.0, 0, proc_stat()),  # start
                (10.0, 20.0, 0.0, 0, proc_stat(user=2000)),  # pause: the rounds so far, quiet
                (15.0, 20.0, 0.0, 0, proc_stat(user=3000)),  # resume: others used 10 s meanwhile
                (25.0, 40.0, 0.0, 0, proc_stat(user=5000))]  # stop: quiet again
    watcher = quiet.Watcher("cpu", fake_readers(timeline, canary=(0.0020, 0.0021, 0.0031)))
    watcher.start()
    watcher.lap()
    with watch.Watching([watcher]).paused():
        pass
    watcher.lap()
    info = watcher.stop()
    found = info["quiet"]
    assert (found["seconds"], found["others_cpu_seconds"], found["canary_ms"]) == (20.0, 0.0, [2.0, 2.1, 3.1])
    assert found["canary_drift"] == 0.55
    assert info["disturbed_by"] == ["the canary drifted 55.0% between its readings (limit 50%): the machine's "
                                    "speed changed"]


def test_a_canary_within_its_quiet_spread_does_not_disturb_a_case():
    """A 45% drift, past the 36% the canary spread on a quiet VM but under the limit, is not a disturbance."""
    readers = fake_readers([(0.0, 0.0, 0.0, 0, proc_stat()), (10.0, 20.0, 0.0, 0, proc_stat(user=2000))],
                           canary=(0.0020, 0.0029))
    watcher = quiet.Watcher("cpu", readers)
    watcher.start()
    info = watcher.stop()
    assert info["quiet"]["canary_drift"] == 0.45 and not info["disturbed"]


@pytest.mark.parametrize(("stored", "canary", "disturbed"), [(None, 0.0031, False), (0.002, 0.0025, False),
                                                              (0.002, 0.0031, True)])
def test_a_whole_case_on_a_machine_slower_than_its_stored_runs_is_disturbed(monkeypatch, stored, canary, disturbed):
    """Readings that agree with each other (no drift) but sit 55% above this machine's stored canary: the
    machine is slower than when it stored its runs (as the second run on a lent H200's host was, at 700
    times); 25% above is within the limit, and with nothing stored nothing is judged."""
    monkeypatch.setattr(quiet, "stored_canary", stored)
    readers = fake_readers([(0.0, 0.0, 0.0, 0, proc_stat()), (10.0, 20.0, 0.0, 0, proc_stat(user=2000))],
                           canary=(canary,))
    watcher = quiet.Watcher("cpu", readers)
    watcher.start()
    info = watcher.stop()
    assert info["quiet"]["canary_drift"] == 0.0 and info["disturbed"] == disturbed
    assert info["quiet"].get("canary_over_stored") == (None if stored is None else round(canary / stored - 1, 4))
    if disturbed:
        assert info["disturbed_by"] == ["the canary's best reading was 55.0% slower than in this machine's stored "
                                        "runs (limit 50%): the machine was slower than then"]


def stored_canaries(folder, threads: int, readings: list[list[float]], device: str = "cpu") -> None:
    """A stored run of this machine (identified with ``threads`` threads) whose cases on ``device`` read the
    canary ``readings`` (ms), one list per case."""
    benchmarks = [{"fullname": f"case{n}", "params": {}, "stats": {"median": 1.0, "iqr": 0.1, "rounds": 2},
                   "extra_info": {"kind": "epoch", "model": "vgg", "device": device, "device_name": device,
                                  "batch_size": 128, "samples": 256, "dataset": "mnist", "pipeline": "reference",
                                  "precision": "fp32", "memory_format": "contiguous", "compile": "eager",
                                  "threads": threads, "quiet": {"canary_ms": canary}}}
                  for n, canary in enumerate(readings)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"000{len(list(folder.iterdir())) + 1}_run.json").write_text(json.dumps(
        {"datetime": "2026-11-30T10:00:00+00:00", "machine_info": machine._this_machine_info(),
         "benchmarks": benchmarks}))


def test_the_stored_canary_is_the_median_of_this_machines_cpu_cases_best_readings(tmp_path):
    threads = torch.get_num_threads()
    stored_canaries(tmp_path, threads, [[0.2, 0.1], [0.3], [0.25]])
    stored_canaries(tmp_path, threads + 1, [[0.01]])  # the same CPU with other threads: another identity
    assert quiet.stored_canary_seconds(tmp_path) == pytest.approx(0.25e-3)
    assert quiet.stored_canary_seconds(tmp_path / "nothing") is None


def test_a_gpu_slowed_by_heat_disturbs_a_case_and_one_at_its_power_cap_does_not():
    for events, disturbed in ((["sw_power_cap"], False), (["sw_power_cap", "hw_thermal_slowdown"], True)):
        clocks = iter([1980, 1755, 1830])
        readers = fake_readers([(0.0, 0.0, 0.0, 0, proc_stat()), (1.0, 2.0, 0.0, 0, proc_stat(user=200))],
                               gpu=lambda device, events=events: lambda: (next(clocks), events))
        watcher = quiet.Watcher("cuda:0", readers)
        watcher.start()
        watcher.lap()
        watcher.lap()
        info = watcher.stop()
        assert info["quiet"]["gpu_sm_clock_mhz"] == [1755, 1980] and info["quiet"]["gpu_clock_events"] == sorted(events)
        assert info["disturbed_by"] == (["the GPU was slowed: hw_thermal_slowdown"] if disturbed else [])
    readers = fake_readers([(0.0, 0.0, 0.0, 0, proc_stat()), (1.0, 2.0, 0.0, 0, proc_stat(user=200))])
    watcher = quiet.Watcher("cuda:0", readers)
    watcher.start()
    assert watcher.stop()["quiet"]["gpu"] == "not read: no GPU here"


def test_nvml_clock_events_are_named_in_either_spelling_of_pynvml(monkeypatch):
    """pynvml renamed its throttle reasons clock events; the reader takes whichever it has."""
    for prefix in ("nvmlClocksEventReason", "nvmlClocksThrottleReason"):
        library = SimpleNamespace(NVML_CLOCK_SM=0, NVMLError=RuntimeError,
                                  nvmlDeviceGetClockInfo=lambda handle, clock: 1410,
                                  **{prefix + "GpuIdle": 1, prefix + "SwPowerCap": 4, prefix + "HwSlowdown": 8})
        setattr(library, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda handle: 4 | 8)
        monkeypatch.setattr(nvml, "handle", lambda device, library=library: (library, "handle"))
        assert quiet.gpu_reader("cuda:0")() == (1410, ["sw_power_cap", "hw_slowdown"])
    monkeypatch.setattr(nvml, "handle", lambda device: (_ for _ in ()).throw(nvml.Unavailable("no NVIDIA driver")))
    assert quiet.gpu_reader("cuda:0") == "no NVIDIA driver"


def test_a_gpu_reading_that_nvml_fails_mid_case_is_recorded_and_does_not_fail_the_case(monkeypatch):
    """A transient NVMLError at the second round: the clock and events read before it stand (a slowdown seen
    still disturbs the case), and why the readings stopped is recorded."""
    class NVMLError(Exception):
        pass

    answers = iter([1980, 1755, NVMLError("Unknown Error")])  # gpu_reader's own check, start, the second round

    def clock(handle, which):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    library = SimpleNamespace(NVML_CLOCK_SM=0, NVMLError=NVMLError, nvmlDeviceGetClockInfo=clock,
                              nvmlClocksEventReasonHwSlowdown=8, nvmlDeviceGetCurrentClocksEventReasons=lambda h: 8)
    monkeypatch.setattr(nvml, "handle", lambda device: (library, "handle"))
    readers = fake_readers([(0.0, 0.0, 0.0, 0, proc_stat()), (1.0, 2.0, 0.0, 0, proc_stat(user=200))],
                           gpu=quiet.gpu_reader)
    watcher = quiet.Watcher("cuda:0", readers)
    watcher.start()
    watcher.lap()
    watcher.lap()
    info = watcher.stop()
    assert info["quiet"]["gpu"] == ("not read: NVML cannot read the clocks of cuda:0: Unknown Error (reading failed "
                                    "during the rounds)")
    assert info["quiet"]["gpu_sm_clock_mhz"] == [1755, 1755] and info["quiet"]["gpu_clock_events"] == ["hw_slowdown"]
    assert info["disturbed_by"] == ["the GPU was slowed: hw_slowdown"]


def test_without_proc_stat_the_process_figures_stand_and_nothing_is_judged_on_the_machine():
    readers = fake_readers([(0.0, 0.0, 0.0, 0, None), (2.0, 3.0, 0.5, 7, None)])
    watcher = quiet.Watcher("cpu", readers)
    watcher.start()
    info = watcher.stop()
    assert info["quiet"]["machine"] == "not readable: no /proc/stat" and "others_share" not in info["quiet"]
    assert info["quiet"]["cpu_user_seconds"] == 3.0 and not info["disturbed"]


def fake_proc(root, processes):
    """A /proc tree of ``{pid: (name, utime ticks, stime ticks)}``, as Linux writes ``/proc/PID/stat``."""
    for pid, (name, utime, stime) in processes.items():
        (root / str(pid)).mkdir(parents=True, exist_ok=True)
        (root / str(pid) / "stat").write_text(f"{pid} ({name}) R 1 1 1 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0 1 0\n")
    (root / "self").mkdir(exist_ok=True)


def test_the_look_names_the_busiest_other_processes_the_governor_and_whether_the_machine_is_quiet(tmp_path, monkeypatch):
    proc, cpufreq = tmp_path / "proc", tmp_path / "cpu"
    fake_proc(proc, {10: ("hog", 100, 0), 11: ("ssh (sshd)", 5, 0), 12: ("idle", 7, 0), 13: ("pytest", 0, 0)})
    for cpu, governor in ((0, "performance"), (1, "performance")):
        (cpufreq / f"cpu{cpu}" / "cpufreq").mkdir(parents=True)
        (cpufreq / f"cpu{cpu}" / "cpufreq" / "scaling_governor").write_text(governor + "\n")
    monkeypatch.setattr(quiet.os, "getpid", lambda: 13)
    monkeypatch.setattr(quiet.os, "getloadavg", lambda: (1.0, 0.5, 0.25))

    def half_a_second_later(seconds):  # what /proc shows after the look's wait
        assert seconds == quiet.LOOK_SECONDS
        fake_proc(proc, {10: ("hog", 150, 0), 11: ("ssh (sshd)", 6, 1), 12: ("idle", 7, 0), 13: ("pytest", 50, 0)})

    readers = fake_readers([(0.0, 0.0, 0.0, 0, proc_stat()), (0.5, 0.0, 0.0, 0, proc_stat(user=52))],
                           canary=(0.00125,))
    found = quiet.look(readers, proc, cpufreq, sleep=half_a_second_later)
    assert found.busiest == ["hog (pid 10) 100% of a core", "ssh (sshd) (pid 11) 4% of a core"]
    assert (found.load, found.cores, found.governor, found.canary_ms) == ([1.0, 0.5, 0.25], 2, "performance", 1.25)
    assert found.figures["others_share"] == 0.52 and found.disturbed_by == [
        "other processes used 52.0% of the machine's CPU time (limit 3%)"]
    lines = found.lines()
    assert lines[0] == ("mnistbench: the machine over 0.5 s: load 1.00 0.50 0.25 on 2 CPUs; other processes used "
                        "52.0% of its CPU time (limit 3%), steal 0.0% (limit 3%)")
    assert lines[1] == "mnistbench: busiest other processes: hog (pid 10) 100% of a core, ssh (sshd) (pid 11) 4% of a core"
    assert lines[2].startswith("mnistbench: CPU frequency governor: performance; canary 1.25 ms")
    assert "of repeats; none stored by this machine); " in lines[2]
    assert lines[3].startswith("mnistbench: the machine is not quiet (other processes used 52.0%")
    assert found.as_dict()["busiest"] == found.busiest


def test_the_look_holds_the_canary_against_this_machines_stored_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(quiet, "stored_canary", 0.0005)
    readers = fake_readers([(0.0, 0.0, 0.0, 0, proc_stat()), (0.5, 0.0, 0.0, 0, proc_stat())], canary=(0.00125,))
    found = quiet.look(readers, tmp_path / "proc", tmp_path / "cpu", sleep=lambda seconds: None)
    assert found.figures["canary_over_stored"] == 1.5 and "of repeats; 2.50x this machine's stored runs); " in (
        found.lines()[2])
    assert found.lines()[3] == ("mnistbench: the machine is not quiet (the canary's best reading was 150.0% slower "
                                "than in this machine's stored runs (limit 50%): the machine was slower than then): "
                                "benchmarks run like this are flagged disturbed")


def test_governors_are_counted_and_their_absence_explained(tmp_path):
    for cpu, governor in ((0, "powersave"), (1, "powersave"), (2, "performance")):
        (tmp_path / f"cpu{cpu}" / "cpufreq").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "cpufreq" / "scaling_governor").write_text(governor)
    assert quiet.governors(tmp_path) == "powersave on 2 CPUs, performance on 1 CPUs"
    assert quiet.governors(tmp_path / "absent").startswith("not readable (no cpufreq governor in /sys")


def test_the_summary_names_each_disturbed_benchmark_with_why():
    benchmarks = [SimpleNamespace(name="test_epoch[vgg-cpu-fast]", extra_info={"disturbed": False}),
                  SimpleNamespace(name="test_step[x]", extra_info={"disturbed": True, "disturbed_by": ["steal 9%"]}),
                  SimpleNamespace(name="test_old[y]", extra_info={})]
    assert quiet.disturbed(benchmarks) == ["test_step[x]: steal 9%"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_the_real_readers_read_this_machine():
    """On Linux: this process's usage, /proc/stat and the canary (a tenth of a second)."""
    counters = quiet.Counters.read(quiet.Readers())
    assert counters.machine is not None and counters.cores >= 1 and counters.user > 0
    assert 0 < quiet.canary_seconds() < quiet.CANARY_SECONDS


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_the_allocator_is_pinned_on_glibc():
    allocator.pin()  # as the plugin did when this run configured; again, the same state
    state = allocator.state()
    assert state["pinned"] and state["mmap_threshold_bytes"] == 32 * 2**20 and state["malloc"].startswith("glibc ")


def test_every_command_runs_with_the_allocator_pinned(monkeypatch):
    """``mnistbench train`` and ``profile`` time steps: in the allocator state of the suite's own process."""
    from mnistbench import cli
    seen = []
    monkeypatch.setattr(allocator._Pinned, "done", False)  # a fresh process's; restored after the test
    monkeypatch.setattr(cli, "profile_command", lambda args: seen.append(allocator.state()["pinned"]) or 0)
    assert cli.main(["profile", "--model", "vgg", "--variant", "fp32-contiguous-eager-default"]) == 0
    assert seen == [platform.libc_ver()[0] == "glibc"]


def test_the_allocator_says_why_it_is_not_pinned_elsewhere(monkeypatch):
    monkeypatch.setattr(allocator, "_Pinned", type("_Pinned", (), {"done": False, "why_not": None}))
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))  # as on macOS
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    allocator.pin()
    assert allocator.state() == {"malloc": "unknown", "pinned": False, "why": "the C library is unknown, not glibc"}


def test_page_faults_are_counted_over_the_rounds_and_given_per_step_or_epoch():
    reads = iter([100, 160, 1160, 1200])  # start, pause (60 faults), resume (evaluation: 1000), stop (40)
    watcher = allocator.FaultWatcher("cpu", read=lambda: next(reads))
    watcher.start()
    watcher.lap()
    watcher.pause()
    watcher.resume()
    info = watcher.stop()
    assert info == {"minor_faults": 100}
    assert allocator.faults_per(info, "epoch", 4) == {"minor_faults_per_epoch": 25.0}
    assert allocator.faults_per({}, "step", 10) == {} and allocator.faults_per(info, "step", 0) == {}


def test_an_untimed_run_reads_the_canary_briefly_and_a_timed_run_for_its_window(monkeypatch):
    """The smoke run's readings judge nothing: a tenth of a second each would only slow the test command."""
    from test_suite import OptionsOnly
    monkeypatch.setattr(quiet, "canary_window", quiet.canary_window)  # restored after the test
    for options, window in (({}, quiet.SMOKE_CANARY_SECONDS), ({"benchmark_only": True}, quiet.CANARY_SECONDS),
                            ({"benchmark_enable": True}, quiet.CANARY_SECONDS)):
        quiet.pytest_configure(OptionsOnly(**options))
        assert quiet.canary_window == window, options
