"""History's verdicts on stored rounds: a change is a regression only when it is larger than the threshold and
a rank test on the rounds says it is significant; too few rounds, a disturbed run or a machine whose speed
differed are said, never called a regression; a time to accuracy's speed is its time per epoch. Hand-made
result files whose rounds give known verdicts."""
import pytest

from mnistbench.reports import compare, history, pairs, ratio, results, significance
from stored import EPYC1, H100, bench, machine_info, report, table_lines, write_run

STEP_ROUNDS = [0.100, 0.101, 0.099, 0.102, 0.098, 0.100, 0.103, 0.097, 0.101, 0.099]  # a step's 10 rounds
LIMITS = {"others_share": 0.03, "steal_share": 0.03, "canary_drift": 0.3, "gpu_clock_events": []}
QUIET = {"disturbed": False, "disturbed_by": [], "quiet": {"canary_ms": [0.130, 0.131, 0.130], "limits": LIMITS}}
BUSY = {"disturbed": True, "disturbed_by": ["other processes used 48.0% of the machine's CPU time (limit 3%)"],
        "quiet": {"canary_ms": [0.131, 0.400, 0.133], "limits": LIMITS}}


def step(data, **extra):
    return bench(kind="step-train", pipeline=None, test="test_step", data=data, **{**QUIET, **extra})


def latest(tmp_path, *runs) -> history.Point:
    for index, benchmarks in enumerate(runs, start=1):
        write_run(tmp_path, index, benchmarks)
    [series] = history.build(results.load([tmp_path]))
    return series.points[-1]


def test_a_step_made_20_percent_slower_is_a_significant_regression(tmp_path, capsys):
    point = latest(tmp_path, [step(STEP_ROUNDS)], [step([t * 1.2 for t in STEP_ROUNDS])])
    assert point.flag == "regression" and point.change == pytest.approx(0.2, abs=0.01)
    assert point.p < significance.ALPHA and point.noise is None and point.note == history.UNKNOWN_NOISE
    status, _, err = report(capsys, "history", tmp_path, "--fail-on-regression")
    assert status == 1 and err.strip().endswith("(1 before the run-to-run noise is known: rerun to confirm)"), err


def test_the_gate_judges_the_newest_run_alone(tmp_path, capsys):
    """An older run's regression, on a machine that has not run since, stays in the table, and the gate of the
    newest run (a CI job's, on another machine) passes; it fails once its own run regresses."""
    write_run(tmp_path, 1, [step(STEP_ROUNDS)])
    write_run(tmp_path, 2, [step([t * 1.2 for t in STEP_ROUNDS])])  # the first machine's last run: regressed
    other = machine_info(cpu=EPYC1, capability="AVX2")
    write_run(tmp_path, 3, [step(STEP_ROUNDS)], machine=other)
    write_run(tmp_path, 4, [step(STEP_ROUNDS)], machine=other)
    status, out, err = report(capsys, "history", tmp_path, "--fail-on-regression")
    assert status == 0 and err == "" and "| regression" in out
    write_run(tmp_path, 5, [step([t * 1.2 for t in STEP_ROUNDS])], machine=other)
    status, _, err = report(capsys, "history", tmp_path, "--fail-on-regression")
    assert status == 1 and err.startswith("mnistbench: 1 regression(s) in the newest run: step-train vgg b128 (cpu) on m2")


def test_a_regression_is_judged_against_the_run_to_run_noise_from_the_fourth_run_on(tmp_path):
    """Two runs' rounds share their processes' machine states: until two changes came before it, a significant
    change is flagged with the note that the noise between runs is not known (it is not zero: no 0% is shown);
    from the fourth run on, a change within the typical run-to-run change is not flagged."""
    runs = [STEP_ROUNDS, [t * 0.85 for t in STEP_ROUNDS], STEP_ROUNDS, [t * 1.12 for t in STEP_ROUNDS]]
    for index, data in enumerate(runs, start=1):
        write_run(tmp_path, index, [step(data)])
    [series] = history.build(results.load([tmp_path]))
    assert [(point.flag, point.noise, point.note == history.UNKNOWN_NOISE) for point in series.points[1:3]] == [
        ("improvement", None, True), ("regression", None, True)]
    last = series.points[-1]
    assert last.change == pytest.approx(0.12) and last.noise == pytest.approx(0.16, abs=0.01), last
    assert (last.flag, last.note) == ("", ""), "12% slower, within the runs' typical change of about 16%"


def test_the_same_rounds_again_are_no_change(tmp_path):
    point = latest(tmp_path, [step(STEP_ROUNDS)], [step(list(reversed(STEP_ROUNDS)))])
    assert (point.flag, point.change, point.p) == ("", 0.0, 1.0)


def test_a_significant_change_within_the_threshold_is_not_flagged(tmp_path):
    """Rounds so tight that 6% slower is significant: real, but within what history calls noise."""
    point = latest(tmp_path, [step(STEP_ROUNDS)], [step([t * 1.06 for t in STEP_ROUNDS])])
    assert point.p < significance.ALPHA and point.change == pytest.approx(0.06) and point.flag == ""


def test_a_change_beyond_the_threshold_that_the_rounds_do_not_support_is_not_flagged(tmp_path):
    """The median moved 10%, but the rounds spread from 0.5 to 1.5 s in both runs."""
    spread = [0.5, 0.7, 0.9, 1.0, 1.1, 1.3, 1.5]
    point = latest(tmp_path, [step(spread)], [step([0.55, 0.77, 0.99, 1.1, 1.21, 1.43, 1.65])])
    assert point.change == pytest.approx(0.1) and point.p > 0.1 and point.flag == ""


def test_two_rounds_a_side_are_too_few_for_any_test_and_the_row_says_so(tmp_path):
    point = latest(tmp_path, [bench(data=[30.0, 30.2], **QUIET)], [bench(data=[39.0, 39.3], **QUIET)])
    assert point.change == pytest.approx(0.3, abs=0.01) and point.flag == "" and point.p is None
    assert point.note == "too few rounds to test (2 and 2: p cannot go below 0.33; 7 a side can reach 0.002)"
    assert significance.ROUNDS_NEEDED == 7 and significance.smallest_p(7, 7) < significance.ALPHA


def test_a_change_involving_a_disturbed_run_is_never_called_a_regression_without_saying_so(tmp_path, capsys):
    slower = [t * 1.2 for t in STEP_ROUNDS]
    point = latest(tmp_path, [step(STEP_ROUNDS)], [step(slower, **BUSY)])
    assert point.flag == "regression (disturbed)"
    assert point.note == ("run 0002 disturbed: other processes used 48.0% of the machine's CPU time (limit 3%)")
    status, out, err = report(capsys, "history", tmp_path, "--fail-on-regression")
    assert status == 0 and "regression (disturbed)" in out
    assert ("1 change(s) in the newest run involve a disturbed run, not counted as regressions or improvements: "
            "step-train vgg b128 (cpu) on m1") in err


def test_a_series_whose_only_run_was_disturbed_says_so(tmp_path):
    """A first run has no change to flag, but its reader still learns that the machine was busy."""
    write_run(tmp_path, 1, [step(STEP_ROUNDS, **BUSY)])
    [series] = history.build(results.load([tmp_path]))
    assert [(point.flag, point.note) for point in series.points] == [
        ("", "run 0001 disturbed: other processes used 48.0% of the machine's CPU time (limit 3%)")]


def test_a_canary_that_ran_at_another_speed_says_the_machine_differed(tmp_path):
    """Neither run was disturbed within itself, but the VM ran the canary 38% slower in the second."""
    slower_machine = {**QUIET, "quiet": {"canary_ms": [0.179, 0.180, 0.180], "limits": LIMITS}}
    point = latest(tmp_path, [step(STEP_ROUNDS)], [step([t * 1.2 for t in STEP_ROUNDS], **slower_machine)])
    assert point.flag == "regression (disturbed)"
    assert point.note == "the canary ran 38% slower than in run 0001: the machine's speed differed"


def test_an_upgrade_of_torch_or_the_gpu_driver_continues_the_series_and_its_change_names_it(tmp_path, capsys):
    """"Did the last upgrade make it slower?": a GPU step 20% slower after torch and the driver were upgraded is
    one series' regression, its note naming both upgrades, and each run keeps its own machine (a new driver is
    a new machine key); another GPU is another series."""
    upgraded = {**H100, "driver": "580.159.04"}
    gpu_step = lambda data: step(data, device="cuda:0", device_name=H100["name"])  # noqa: E731
    write_run(tmp_path, 1, [gpu_step(STEP_ROUNDS)], machine=machine_info(torch_version="2.11.0"))
    write_run(tmp_path, 2, [gpu_step([t * 1.2 for t in STEP_ROUNDS])], machine=machine_info(gpus=(upgraded,)))
    write_run(tmp_path, 3, [gpu_step(STEP_ROUNDS)],
              machine=machine_info(gpus=({**H100, "name": "NVIDIA H200", "memory_gib": 139.8},)))
    first, other = history.build(results.load([tmp_path]))
    assert [point.result.driver for point in first.points] == ["570.86.15", "580.159.04"]
    assert first.points[-1].flag == "regression"
    assert first.points[-1].note == f"torch 2.11.0 -> 2.14.1; driver 570.86.15 -> 580.159.04; {history.UNKNOWN_NOISE}"
    assert first.machine == "NVIDIA H100 80GB HBM3 (79.2 GiB; sm 9.0; driver 580.159.04)", "the newest run's"
    assert [point.result.machine for point in other.points] == ["NVIDIA H200 (139.8 GiB; sm 9.0; driver 570.86.15)"]
    status, out, err = report(capsys, "history", tmp_path)
    assert status == 0 and [line.split("|")[2].strip() for line in table_lines(out)] == ["m1", "m2", "m3"], out
    # the H100's series spans two machine keys, so the labels, not the keys, tell the two GPUs apart
    assert [series.label for series in (first, other)] == [
        "step-train vgg b128 (cuda:0, NVIDIA H100 80GB HBM3 (79.2 GiB; sm 9.0))",
        "step-train vgg b128 (cuda:0, NVIDIA H200 (139.8 GiB; sm 9.0))"]


def test_a_driver_or_version_unknown_on_both_sides_is_no_upgrade(tmp_path):
    """Missing, null and "" all read "unknown": no "driver unknown -> unknown" between two of them."""
    no_driver = {key: value for key, value in H100.items() if key != "driver"}
    gpu_step = lambda data: step(data, device="cuda:0", device_name=H100["name"])  # noqa: E731
    write_run(tmp_path, 1, [gpu_step(STEP_ROUNDS)], machine=machine_info(gpus=(no_driver,)))
    write_run(tmp_path, 2, [gpu_step(STEP_ROUNDS)], machine=machine_info(gpus=({**H100, "driver": ""},)))
    [series] = history.build(results.load([tmp_path]))
    assert series.points[-1].note == ""


def test_a_cell_holding_a_pipe_stays_one_markdown_cell(tmp_path, capsys):
    """A hand-made driver "570|x" in a note: Markdown's escape, not a column more."""
    gpu_step = lambda data: step(data, device="cuda:0", device_name=H100["name"])  # noqa: E731
    write_run(tmp_path, 1, [gpu_step(STEP_ROUNDS)], machine=machine_info(gpus=({**H100, "driver": "570|x"},)))
    write_run(tmp_path, 2, [gpu_step(STEP_ROUNDS)])
    status, out, _ = report(capsys, "history", tmp_path)
    rows = table_lines(out)
    assert status == 0 and "driver 570\\|x -> 570.86.15" in rows[-1], out
    [header] = [line for line in out.splitlines() if line.startswith("| benchmark")]
    assert {row.replace("\\|", "").count("|") for row in rows} == {header.count("|")}, out


def test_runs_without_stored_rounds_are_still_judged_by_their_spread(tmp_path):
    point = latest(tmp_path, [bench(median=1.0, iqr=0.01)], [bench(median=1.2, iqr=0.012)])
    assert point.flag == "regression" and point.note == "rounds not stored: judged by their spread"


def time_to_accuracy(seconds, epochs, **extra):
    return bench(kind="time-to-accuracy", test="test_time_to_accuracy", setup="article", data=seconds,
                 epochs=epochs, seeds=len(epochs), **{**QUIET, **extra})


def test_time_to_accuracy_is_epochs_needed_and_time_per_epoch_and_only_the_latter_is_speed(tmp_path, capsys):
    """Issue 20's run: the article recipe's same four epochs in 120.5 s against 174.1 s, a 31% faster time to
    99% that is the time per epoch, and a later run that needed three epochs at the same speed."""
    write_run(tmp_path, 1, [time_to_accuracy([174.1], [4])])
    write_run(tmp_path, 2, [time_to_accuracy([120.5], [4])])
    write_run(tmp_path, 3, [time_to_accuracy([90.4], [3])])
    [series] = history.build(results.load([tmp_path]))
    faster, fewer_epochs = series.points[1:]
    assert faster.change == pytest.approx(120.5 / 174.1 - 1) and faster.flag == ""  # one round: untestable
    assert faster.note == ("time per epoch 43.52 s -> 30.12 s; too few rounds to test (1 and 1: p cannot go below 1; "
                           "7 a side can reach 0.002)")
    assert fewer_epochs.change == pytest.approx(0.0, abs=0.001)  # the same speed: 25% less time, no speed change
    assert fewer_epochs.note.startswith("time per epoch 30.12 s -> 30.13 s; epochs needed 4 -> 3: the recipe and "
                                        "seeds, not speed")
    rows = history.rows([series])
    assert [row["epochs"] for row in rows] == ["4", "4", "3"]
    status, out, _ = report(capsys, "history", tmp_path, "--format", "csv")
    assert status == 0 and out.splitlines()[0] == ("benchmark,machine,run,time,median_s,epochs,change,noise,p,flag,"
                                                   "note")


def test_a_recipe_changed_is_another_benchmark_not_a_speed_change(tmp_path):
    """VGGNet's fast recipe, 2 epochs at lr 6e-3 as stored before label smoothing and fractions were, then
    with them: two series, each named by its recipe, and no change between them; a pair of them (``ratio``,
    ``compare``) is refused naming what differs."""
    old = dict(lr=0.006, schedule="onecycle", max_epochs=2)
    write_run(tmp_path, 1, [time_to_accuracy([30.0], [2], **old)])
    write_run(tmp_path, 2, [time_to_accuracy([11.0], [1], **{**old, "max_epochs": 1, "label_smoothing": 0.1,
                                                             "epoch_fraction": 0.7})])
    loaded = results.load([tmp_path])
    assert [len(series.points) for series in history.build(loaded)] == [1, 1]
    assert sorted(series.label for series in history.build(loaded)) == [
        "time-to-accuracy vgg resident b128 (cpu, lr 0.006 onecycle, 1 epochs of 0.7, label smoothing 0.1)",
        "time-to-accuracy vgg resident b128 (cpu, lr 0.006 onecycle, 2 epochs)"]
    before, after = loaded
    assert pairs.mismatch(before, after) == ("max_epochs differs (a 2, b 1); label_smoothing differs (a 0.0, b 0.1); "
                                               "epoch_fraction differs (a 1.0, b 0.7)")


def test_time_per_epoch_from_several_seeds_is_tested_seed_by_seed(tmp_path):
    before = [100.0 + i for i in range(7)]
    point = latest(tmp_path, [time_to_accuracy(before, [2] * 7)],
                   [time_to_accuracy([1.25 * t * 1.5 for t in before], [3] * 7)])  # 3 epochs, each 25% slower
    assert point.change == pytest.approx(0.25) and point.flag == "regression" and point.p < significance.ALPHA
    assert "epochs needed 2 -> 3: the recipe and seeds, not speed" in point.note


def test_ratio_and_compare_say_when_a_side_ran_disturbed(tmp_path):
    write_run(tmp_path / "a", 1, [bench(median=2.0, **QUIET), bench(device="cuda:0", median=0.5, **BUSY)])
    write_run(tmp_path / "b", 2, [bench(median=1.0, **BUSY), bench(device="cuda:0", median=0.5, **QUIET)])
    [pair] = ratio.pairs(results.load([tmp_path / "a"]))
    assert pair.speedup == 4.0 and ratio.row(pair)["note"] == (
        "cuda:0 disturbed: other processes used 48.0% of the machine's CPU time (limit 3%)")
    comparison = compare.Comparison(results.load([tmp_path / "a"]), results.load([tmp_path / "b"]))
    rows = {row["benchmark"]: row for row in comparison.rows() if row["tuning"] == ""}
    assert rows["epoch vgg resident b128 (cpu)"]["note"] == (
        "B disturbed: other processes used 48.0% of the machine's CPU time (limit 3%)")
    assert rows["epoch vgg resident b128 (cuda:0)"]["note"].startswith("A disturbed: ")

