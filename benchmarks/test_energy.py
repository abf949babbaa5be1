"""Energy, tested without the hardware: a fake powercap tree whose counters advance and wrap, a stand-in for
NVML's module, a meter on a clock the test moves for the watcher, and stored results for the reports. The real
counters are read by the timed runs of a machine that has them (``test_suite``'s lease job checks what the
CPU's counter gave, or why there is none)."""
import threading
from pathlib import Path

import pytest

from mnistbench import energy, nvml, watch
from mnistbench.reports import compare, ratio, results
from stored import EPYC1, bench, machine_info, report, write_run


def zone(folder: Path, name: str, energy_uj: int, range_uj: int = 1000) -> Path:
    """A powercap zone as Linux lists it: its name, counter and the counter's range."""
    folder.mkdir(parents=True)
    (folder / "name").write_text(f"{name}\n")
    (folder / "max_energy_range_uj").write_text(f"{range_uj}\n")
    (folder / "energy_uj").write_text(f"{energy_uj}\n")
    return folder


def powercap(root: Path) -> Path:
    """Two packages, the first with a DRAM and a core subdomain, beside what would count a package twice: the
    platform domain (psys), the MMIO copy of package 0, and the control type's own folder."""
    zone(root / "intel-rapl:0", "package-0", 900)
    zone(root / "intel-rapl:0" / "intel-rapl:0:0", "dram", 100, range_uj=500)
    zone(root / "intel-rapl:0" / "intel-rapl:0:1", "core", 0)
    zone(root / "intel-rapl:1", "package-1", 0)
    zone(root / "intel-rapl:2", "psys", 0)
    zone(root / "intel-rapl-mmio:0", "package-0", 0)
    (root / "intel-rapl").mkdir()
    return root


def set_uj(folder: Path, value: int) -> None:
    (folder / "energy_uj").write_text(f"{value}\n")


def test_rapl_counts_every_package_and_its_dram_through_every_wrap(tmp_path):
    root = powercap(tmp_path / "powercap")
    package, dram = root / "intel-rapl:0", root / "intel-rapl:0" / "intel-rapl:0:0"
    rapl = energy.Rapl(root)
    assert rapl.domains == ("package-0", "package-0/dram", "package-1")
    assert rapl.description == f"RAPL through {root}: package-0, package-0/dram, package-1"
    assert rapl.read() == (0, 0, 0)
    set_uj(package, 100)  # 900 -> 1000, wrap to 0, -> 100: 201 uJ
    set_uj(dram, 300)
    set_uj(root / "intel-rapl:1", 50)
    assert rapl.read() == pytest.approx((201e-6, 200e-6, 50e-6))
    for value in (950, 20):  # two more wraps, each seen by a reading before the next: 850 + 71 uJ
        set_uj(package, value)
        rapl.read()
    assert rapl.read()[0] == pytest.approx((201 + 850 + 71) * 1e-6)


def test_rapl_says_why_it_cannot_be_read(tmp_path, monkeypatch):
    with pytest.raises(energy.NoCounter) as missing:
        energy.Rapl(tmp_path / "powercap")
    assert str(missing.value) == (f"no {tmp_path / 'powercap'}: this kernel lists no RAPL counter (no intel_rapl "
                                  f"driver, or a virtual machine that does not pass RAPL through)")
    zone(tmp_path / "platform" / "intel-rapl:0", "psys", 0)
    with pytest.raises(energy.NoCounter, match=r"holds no RAPL package domain \(intel-rapl:N named package-N\)$"):
        energy.Rapl(tmp_path / "platform")
    root = powercap(tmp_path / "garbled")
    set_uj(root / "intel-rapl:1", "n/a")
    with pytest.raises(energy.NoCounter, match=r"intel-rapl:1/energy_uj cannot be read: invalid literal"):
        energy.Rapl(root)
    root = powercap(tmp_path / "root-only")
    read_text = Path.read_text

    def root_only(path, *args, **kwargs):  # as Linux 5.10 and later leave energy_uj (tests here run as root)
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", root_only)
    with pytest.raises(energy.NoCounter) as refused:
        energy.Rapl(root)
    assert str(refused.value) == (f"{root / 'intel-rapl:0' / 'energy_uj'} is readable by root only (Linux 5.10 and "
                                  f"later, since CVE-2020-8694): run as root or make the RAPL files readable "
                                  f"(chmod a+r) to measure energy")


class FakeNvml:
    """The stand-in for pynvml: one GPU's total-energy counter in millijoules, NVML's "Not Supported", or another
    error of NVML's."""

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 (pynvml's name)
        def __str__(self):
            return "Not Supported"

    def __init__(self, millijoules=None):
        self.millijoules = millijoules

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):  # noqa: N802 (pynvml's name)
        assert handle == "the handle of cuda:0"
        if self.millijoules is None:
            raise self.NVMLError_NotSupported()
        if isinstance(self.millijoules, Exception):
            raise self.millijoules
        return self.millijoules


@pytest.fixture
def fake_nvml(monkeypatch):
    library = FakeNvml(12_345)
    monkeypatch.setattr(energy.nvml, "handle", lambda device: (library, f"the handle of {device}"))
    monkeypatch.setattr(energy.Nvml, "measured_periods", {})
    return library


def test_nvml_reads_the_gpus_millijoules_and_measures_its_update_period_once(fake_nvml, monkeypatch):
    measured = []
    monkeypatch.setattr(energy, "update_period", lambda read: measured.append(read()) or 0.02)
    counter = energy.counter("cuda:0")
    assert (counter.source, counter.domains, counter.read()) == ("nvml", ("gpu",), (12.345,))
    assert counter.resolution_joules == 0.001
    assert counter.update_seconds() == energy.Nvml("cuda:0").update_seconds() == (
        0.02, "measured: the longest of 3 intervals between changes of the counter")
    assert measured == [12.345], "measured once per GPU and process"
    monkeypatch.setattr(energy.Nvml, "measured_periods", {"cuda:0": None})
    assert counter.update_seconds() == (0.1, "not measured (the counter changed fewer than 4 times in 1 s): NVML's "
                                             "longest, 100 ms")


def test_a_gpu_without_the_energy_counter_or_without_nvml_says_why(fake_nvml, monkeypatch):
    fake_nvml.millijoules = None  # a GPU older than Volta, or a MIG instance
    assert energy.watcher("cuda:0").stop() == energy.unavailable(
        "NVML reads no energy of cuda:0: Not Supported (the total-energy counter needs a Volta or newer GPU, and "
        "is not read per MIG instance)")

    fake_nvml.millijoules = FakeNvml.NVMLError("GPU is lost")
    assert energy.watcher("cuda:0").stop() == energy.unavailable("NVML reads no energy of cuda:0: GPU is lost")

    def no_driver(device):
        raise nvml.Unavailable("NVML could not start: NVML Shared Library Not Found")

    monkeypatch.setattr(energy.nvml, "handle", no_driver)
    assert energy.watcher("cuda:0").stop() == energy.unavailable("NVML could not start: NVML Shared Library Not Found")
    assert energy.watcher("mps").stop() == energy.unavailable(
        "no energy counter is read on mps: only NVIDIA GPUs (NVML) and CPUs with RAPL (Linux powercap) count energy "
        "here")


def ticking(change_ms: list[int]):
    """A clock that moves 1 ms at each reading of a counter that changes at the times ``change_ms``."""
    now = [0]

    def read():
        now[0] += 1
        return sum(time <= now[0] for time in change_ms)

    return read, lambda: now[0] / 1000


def test_the_update_period_is_the_longest_interval_between_changes_of_the_counter():
    assert energy.update_period(*ticking([20, 40, 70, 90, 110])) == pytest.approx(0.03)
    assert energy.update_period(*ticking([20, 40, 70])) is None, "too few changes within the second"


class Meter:
    """A counter whose energy grows at the power it runs at, on a clock the test moves; each reading recorded
    after whatever happened before it (the watcher synchronises the device first)."""

    source, description, resolution_joules, poll_seconds, domains = "nvml", "a test meter", 0.001, None, ("gpu",)

    def __init__(self, update_seconds: float = 0.01):
        self.now, self.joules, self.update, self.events, self.broken = 0.0, 0.0, update_seconds, [], None

    def run(self, seconds: float, watts: float) -> None:
        self.now += seconds
        self.joules += seconds * watts

    def read(self) -> tuple[float]:
        if self.broken:
            raise energy.NoCounter(self.broken)
        self.events.append("read")
        return (self.joules,)

    def update_seconds(self) -> tuple[float, str]:
        return self.update, "set by the test"


@pytest.fixture
def meter(monkeypatch) -> Meter:
    """The meter every watched case reads; ``events`` shows each device synchronisation before its reading."""
    found = Meter()

    def make(device):
        return energy.EnergyWatcher(device, found, clock=lambda: found.now)

    monkeypatch.setattr(watch, "WATCHERS", [make])
    monkeypatch.setattr(energy, "watcher", make)  # a window of its own (energy.own_window) reads it too
    monkeypatch.setattr(energy.devices, "synchronize", lambda device: found.events.append(f"synchronize {device}"))
    return found


def test_epoch_rounds_count_without_their_setup_each_round_a_window(meter):
    """As the epoch benchmark runs them: the setup before each round (restarting the weights) paused, then the
    round, 2 s at 100 W."""
    with watch.watching("cuda:0") as watched:
        meter.run(0.5, 60)  # pytest-benchmark starts: before the first round, not counted
        for _ in range(2):
            with watched.paused():
                meter.run(1.0, 10)
                watched.lap()
            meter.run(2.0, 100)
    info = watched.info
    assert info["energy_window_joules"] == pytest.approx([200, 200])
    assert info["energy_domain_joules"] == {"gpu": pytest.approx(400)}
    assert info["energy_window_seconds"] == [2.0, 2.0] and info["energy_power_watts"] == pytest.approx(100)
    assert info["energy_error_bound"] == pytest.approx(2 * 0.01 / 4), "two unbroken stretches of 4 s in all"
    assert (info["energy_source"], info["energy_counter"], info["energy_resolution_joules"]) == (
        "nvml", "a test meter", 0.001)
    assert (info["energy_update_seconds"], info["energy_update_method"]) == (0.01, "set by the test")
    assert meter.events == ["synchronize cuda:0", "read"] * 6  # start, pause and resume per round, stop


def test_a_time_to_accuracy_counts_no_evaluation(meter):
    """Each seed trains two epochs of 1 s at 100 W with an evaluation at 30 W after each, paused."""
    with watch.watching("cuda:0") as watched:
        for _ in range(2):
            with watched.paused():
                meter.run(1.0, 10)
                watched.lap()
            for _ in range(2):
                meter.run(1.0, 100)
                with watched.paused():
                    meter.run(1.0, 30)
    info = watched.info
    assert info["energy_window_joules"] == pytest.approx([200, 200]) and info["energy_window_seconds"] == [2.0, 2.0]
    assert info["energy_power_watts"] == pytest.approx(100)
    # Three unbroken stretches per seed: each epoch, and the instant from the last evaluation to the next setup.
    assert info["energy_error_bound"] == pytest.approx(6 * 0.01 / 4)
    assert energy.figures(info, round_seconds=2.0, images_per_second=1000.0, to_target=True) == pytest.approx(
        {"energy_joules": 200.0, "joules_per_image": 0.1, "energy_to_target_joules": 200.0})


def test_steps_are_one_window_whose_power_times_the_median_step_is_the_energy_of_a_step(meter):
    """pytest-benchmark calibrates and times its rounds inside one call: 1.5 s at 80 W, one window."""
    with watch.watching("cpu") as watched:
        meter.run(1.5, 80)
    info = watched.info
    assert info["energy_window_joules"] == [pytest.approx(120)] and info["energy_window_seconds"] == [1.5]
    assert info["energy_power_watts"] == pytest.approx(80)
    assert energy.figures(info, round_seconds=0.05, images_per_second=2560.0, to_target=False) == pytest.approx(
        {"energy_joules": 4.0, "joules_per_image": 80 / 2560})


def test_a_window_too_short_for_the_counter_is_left_out_with_the_reason(meter):
    meter.update = 0.1
    with watch.watching("cuda:0") as watched:
        meter.run(0.5, 300)
    info = watched.info
    assert info["energy_error_bound"] == pytest.approx(0.2) and "energy_power_watts" not in info
    assert info["energy_left_out"] == ("the counted rounds last 0.5 s in 1 unbroken stretch(es), too short for a "
                                       "counter updated every 100 ms: their energy could be off by up to 20%, more "
                                       "than 10%")
    assert info["energy_window_joules"] == [pytest.approx(150)], "the reading itself is kept"
    assert energy.figures(info, round_seconds=0.5, images_per_second=1000.0, to_target=False) == {}


def test_rounds_too_short_for_the_counter_are_measured_again_in_a_window_of_their_own(meter):
    """Two fast epochs of 60 ms at 300 W, restarted untimed at 20 W, against a counter updated every 100 ms: too
    short, so the epochs run again back to back, each restarted (1 ms at 20 W) within the window, for 20
    updates (2 s); the window's power times the timed median is the energy of an epoch."""
    meter.update = 0.1
    with watch.watching("cuda:0") as watched:
        for _ in range(2):
            with watched.paused():
                meter.run(0.5, 20)
                watched.lap()
            meter.run(0.06, 300)
    timed = {**watched.info, "quiet_load": 0.5}  # another watcher's field
    restarts = []

    def restart():
        restarts.append(meter.now)
        meter.run(0.001, 20)

    info = energy.own_window(timed, "cuda:0", lambda: meter.run(0.06, 300), between=restart, round_seconds=0.06,
                             what="epochs")
    assert len(restarts) == 34 == -(-20 * 0.1 // 0.06), "20 updates of 100 ms over 60 ms epochs"
    assert info["energy_window_seconds"] == [pytest.approx(34 * 0.061)], "one window, restarts included"
    assert info["energy_power_watts"] == pytest.approx((0.06 * 300 + 0.001 * 20) / 0.061)
    assert info["energy_error_bound"] == pytest.approx(0.1 / (34 * 0.061)), "one unbroken stretch"
    assert info["energy_own_window"] == ("34 more epochs after the timed rounds, untimed, back to back, each "
                                         "restarted within the window")
    assert info["energy_timed_left_out"] == timed["energy_left_out"] and "energy_left_out" not in info
    assert info["quiet_load"] == 0.5
    assert energy.figures(info, round_seconds=0.06, images_per_second=12800 / 0.06, to_target=False)[
        "energy_joules"] == pytest.approx(0.06 * info["energy_power_watts"])


def test_rounds_the_counter_could_time_and_untimed_or_unmeasured_rounds_keep_their_fields(meter):
    def never():
        raise AssertionError("no window of its own")

    meter.update = 0.01
    with watch.watching("cuda:0") as watched:
        meter.run(2.0, 100)
    assert energy.own_window(watched.info, "cuda:0", never, round_seconds=1.0, what="epochs") is watched.info
    meter.update = 0.1
    with watch.watching("cuda:0") as watched:
        meter.run(0.2, 100)
    assert energy.own_window(watched.info, "cuda:0", never, round_seconds=None, what="epochs") is watched.info, (
        "pytest-benchmark disabled: nothing was timed")
    unavailable = energy.unavailable("no counter")
    assert energy.own_window(unavailable, "cpu", never, round_seconds=0.01, what="steps") is unavailable


def test_a_window_of_its_own_whose_training_diverges_leaves_the_timed_rounds_as_they_were(meter):
    meter.update = 0.1
    with watch.watching("cuda:0") as watched:
        meter.run(0.2, 100)
    events = len(meter.events)

    def diverges():
        meter.run(0.05, 100)
        raise FloatingPointError("vgg: loss became nan at step 12")

    info = energy.own_window(watched.info, "cuda:0", diverges, round_seconds=0.1, what="epochs")
    assert info == {**watched.info, "energy_own_window_failed": "FloatingPointError: vgg: loss became nan at step 12"}
    assert meter.events[events:] == ["synchronize cuda:0", "read"] * 2, "the window was started and stopped"


def test_a_counter_that_does_not_advance_or_fails_during_the_rounds_is_unavailable(meter):
    with watch.watching("cpu") as watched:
        meter.run(5.0, 0)
    assert watched.info == energy.unavailable("the nvml counter did not advance over 5 s of rounds, many times its "
                                              "update period: it does not count energy here")
    with watch.watching("cpu") as watched:
        meter.run(1.0, 100)
        meter.broken = "NVML reads no energy of cuda:0: GPU is lost"
    assert watched.info == energy.unavailable("NVML reads no energy of cuda:0: GPU is lost (reading failed during "
                                              "the rounds)")


def test_rapl_is_read_in_the_background_while_watched(tmp_path, monkeypatch):
    monkeypatch.setattr(energy, "POWERCAP", powercap(tmp_path / "powercap"))
    watcher = energy.watcher("cpu")
    watcher.start()
    assert watcher.poller.thread.is_alive()
    info = watcher.stop()
    assert not watcher.poller.thread.is_alive() and info["energy_source"] == "rapl"
    read = threading.Event()
    poller = energy._Poller(read.set, 0.001)
    assert read.wait(timeout=10), "a reading every poll interval"
    poller.stop()


def test_no_counter_here_is_unavailable_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(energy, "POWERCAP", tmp_path / "none")
    watcher = energy.watcher("cpu")
    for step in (watcher.start, watcher.lap, watcher.pause, watcher.resume):
        step()
    assert watcher.stop() == {"energy_source": "unavailable", "energy_unavailable_reason": (
        f"no {tmp_path / 'none'}: this kernel lists no RAPL counter (no intel_rapl driver, or a virtual machine that "
        f"does not pass RAPL through)")}
    assert energy.figures(watcher.stop(), round_seconds=1.0, images_per_second=1.0, to_target=False) == {}


def recording(name: str, events: list) -> type:
    """A kind of watcher that records when it starts and stops."""

    class Recording:
        def __init__(self, device):
            pass

        def start(self):
            events.append(f"start {name}")

        lap = pause = resume = lambda self: None

        def stop(self):
            events.append(f"stop {name}")
            return {}

    return Recording


def test_the_energy_watcher_is_innermost_whatever_order_the_watchers_registered_in(monkeypatch):
    """As the ``mnistbench train`` job imports them, energy before quiet: energy still starts after quiet and stops
    before it, so that the quiet canary's readings never count in the energy of the rounds. A case may leave a
    watcher out."""
    monkeypatch.setattr(watch, "WATCHERS", [])
    monkeypatch.setattr(watch, "INNERMOST", set())
    events = []
    energy_kind = recording("energy", events)
    watch.register(energy_kind, innermost=True)
    watch.register(recording("quiet", events))
    watch.register(recording("faults", events))
    with watch.watching("cpu"):
        events.append("rounds")
    assert events == ["start quiet", "start faults", "start energy", "rounds", "stop energy", "stop faults",
                      "stop quiet"]
    events.clear()
    with watch.watching("cpu", leave_out={energy_kind}):  # as the data-parallel case, whose energy is not measured
        events.append("rounds")
    assert events == ["start quiet", "start faults", "rounds", "stop faults", "stop quiet"]


def test_ratio_shows_images_per_joule_and_the_energy_ratio_only_where_both_sides_measured_it(tmp_path, capsys):
    write_run(tmp_path / "none", 1, [bench(median=2.0), bench(device="cuda:0", median=0.5)])
    write_run(tmp_path / "one", 1, [bench(median=2.0, joules_per_image=0.01), bench(device="cuda:0", median=0.5)])
    for folder in ("none", "one"):  # today's table: no empty columns
        [row] = ratio.rows(ratio.pairs(results.load([tmp_path / folder])))
        assert not set(ratio.ENERGY_COLUMNS) & row.keys() and row["speedup"] == 4.0
    write_run(tmp_path / "both", 1, [bench(median=2.0, joules_per_image=0.01),
                                     bench(device="cuda:0", median=0.5, joules_per_image=0.0005),
                                     bench(pipeline="reference", median=3.0),
                                     bench(pipeline="reference", device="cuda:0", median=1.0)])
    rows = ratio.rows(ratio.pairs(results.load([tmp_path / "both"])))
    columns = list(rows[0])
    assert columns[columns.index("cpu_median_s") + 1] == "cpu_images_per_joule"
    assert columns[columns.index("accelerator_median_s") + 1] == "accelerator_images_per_joule"
    assert columns[columns.index("speedup") + 1] == "energy_ratio"
    found = {row["benchmark"]: (row["cpu_images_per_joule"], row["accelerator_images_per_joule"], row["energy_ratio"])
             for row in rows}
    assert found == {"epoch vgg resident b128": (pytest.approx(100), pytest.approx(2000), pytest.approx(20)),
                     "epoch vgg reference b128": (None, None, None)}
    status, out, _ = report(capsys, "ratio", tmp_path / "both")
    assert status == 0 and "| 20.00x " in out and "| 2000 " in out


def test_compare_adds_the_energy_ratio_and_its_geometric_mean_where_both_machines_measured_it(tmp_path):
    a = write_run(tmp_path / "a", 1, [bench(median=2.0, joules_per_image=0.02),
                                      bench(setup="fast", median=2.0, joules_per_image=0.01),
                                      bench(pipeline="reference", median=4.0)])
    b = write_run(tmp_path / "b", 2, [bench(median=1.0, joules_per_image=0.005),
                                      bench(setup="fast", median=0.5, joules_per_image=0.005),
                                      bench(pipeline="reference", median=1.0)],
                  machine=machine_info(cpu=EPYC1, capability="AVX2", gpus=()))
    comparison = compare.Comparison(results.load([a]), results.load([b]))
    rows = {(row["benchmark"], row["tuning"]): row for row in comparison.rows()}
    resident = rows["epoch vgg resident b128", ""]
    assert (resident["a_images_per_joule"], resident["b_images_per_joule"], resident["energy_ratio"]) == (
        pytest.approx(50), pytest.approx(200), pytest.approx(4))
    assert rows["epoch vgg reference b128", "base"]["energy_ratio"] is None
    means = {tuning: (rows["geometric mean", tuning]["speedup"], rows["geometric mean", tuning]["energy_ratio"],
                      rows["geometric mean", tuning]["note"]) for tuning in compare.TUNINGS}
    assert means == {"base": (4.0, None, "over 1 benchmark"), "peak": (4.0, 2.0, "over 1 benchmark")}
    assert comparison.reading == f"{compare.READING} {compare.ENERGY_READING}"
    without = compare.Comparison([r for r in results.load([a]) if r.images_per_joule is None],
                                 [r for r in results.load([b]) if r.images_per_joule is None])
    assert without.reading == compare.READING
    assert not set(compare.ENERGY_COLUMNS) & set().union(*without.rows())
