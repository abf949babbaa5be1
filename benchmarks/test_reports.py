"""The reports over stored results: ratios, history and regressions, bad files, plots, the command line.

Hand-made pytest-benchmark files whose expected ratios and regressions are known exactly, plus the
real CPU history committed under results/.
"""
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from mnistbench import cli, history, ratio, results

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench(model="vgg", device="cpu", median=1.0, iqr=0.01, kind="epoch", pipeline="resident", **extra):
    info = {"kind": kind, "model": model, "device": device, "device_name": f"{device} model", "batch_size": 128,
            "samples": 60_000, "dataset": "mnist", "pipeline": pipeline, "precision": "fp32",
            "memory_format": "contiguous", "compile": "eager"}
    info.update(extra)
    params = {"model_name": model, "device": device, "pipeline_name": pipeline}
    name = f"benchmarks/test_epoch.py::test_epoch[{model}-{device}-{pipeline}]"
    return {"name": name.split("::")[1], "fullname": name, "params": params, "extra_info": info,
            "stats": {"median": median, "iqr": iqr, "rounds": 3}}


def write_run(folder: Path, index: int, benchmarks, torch_version="2.14.1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{index:04d}_run.json"
    path.write_text(json.dumps({
        "machine_info": {"mnistbench": {"torch": torch_version, "torchvision": "0.29.1"}},
        "commit_info": {}, "benchmarks": benchmarks, "version": "5.3.1",
        "datetime": f"2026-11-{index:02d}T10:00:00+00:00",
    }))
    return path


def mnistbench(*args):
    return subprocess.run([sys.executable, "-m", "mnistbench", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_ratio_is_the_cpu_median_over_the_accelerator_median(tmp_path):
    write_run(tmp_path, 1, [bench(median=2.0), bench(device="cuda:0", median=0.25)])
    [pair] = ratio.pairs(results.load([tmp_path]))
    assert pair.speedup == 8.0
    assert pair.row()["benchmark"] == "epoch vgg resident b128"


def test_ratio_uses_the_newest_run_per_device(tmp_path):
    write_run(tmp_path, 1, [bench(median=4.0), bench(device="cuda:0", median=0.5)])
    write_run(tmp_path, 2, [bench(median=2.0)])
    write_run(tmp_path, 3, [bench(device="mps", median=1.0)])
    found = {pair.accelerator.device: pair.speedup for pair in ratio.pairs(results.load([tmp_path]))}
    assert found == {"cuda:0": 4.0, "mps": 2.0}


@pytest.mark.parametrize("changed, reason", [
    ({"samples": 256}, "samples differs (cpu 60000, cuda:0 256)"),
    ({"dataset": "synthetic"}, "dataset differs (cpu mnist, cuda:0 synthetic)"),
    ({"precision": "bf16"}, "precision differs (cpu fp32, cuda:0 bf16)"),
])
def test_ratio_refuses_pairs_whose_configuration_differs(tmp_path, changed, reason):
    write_run(tmp_path, 1, [bench(median=2.0), bench(device="cuda:0", median=0.5, **changed)])
    [pair] = ratio.pairs(results.load([tmp_path]))
    assert pair.speedup is None and pair.mismatch == reason


def test_ratio_refuses_pairs_from_different_torch_versions(tmp_path):
    write_run(tmp_path, 1, [bench(median=2.0)], torch_version="2.14.1")
    write_run(tmp_path, 2, [bench(device="cuda:0", median=0.5)], torch_version="2.11.0")
    [pair] = ratio.pairs(results.load([tmp_path]))
    assert pair.mismatch == "torch differs (cpu 2.14.1, cuda:0 2.11.0)"


def test_ratio_formats(tmp_path):
    write_run(tmp_path, 1, [bench(median=3.0), bench(device="cuda:0", median=1.5)])
    for fmt, check in [("csv", lambda out: out.splitlines()[0].startswith("benchmark,cpu,")),
                       ("json", lambda out: json.loads(out)[0]["speedup"] == 2.0),
                       ("markdown", lambda out: out.startswith("| benchmark") and "| 2 " in out)]:
        run = mnistbench("ratio", tmp_path, "--format", fmt)
        assert run.returncode == 0 and check(run.stdout), run.stdout + run.stderr


def test_summary_of_a_one_device_run_is_empty_and_of_two_devices_is_the_ratio_table():
    document = {"datetime": "2026-11-01T00:00:00", "benchmarks": [bench(median=2.0)]}
    assert ratio.summary(document) is None
    document["benchmarks"].append(bench(device="cuda:0", median=0.1))
    assert "| 20 " in ratio.summary(document)


def medians_run(tmp_path, medians, iqrs=None):
    for index, median in enumerate(medians, start=1):
        write_run(tmp_path, index, [bench(median=median, iqr=(iqrs or [0.005] * len(medians))[index - 1] * median)])
    return history.build(results.load([tmp_path]))


def test_history_flags_a_slowdown_beyond_threshold_and_noise(tmp_path):
    [series] = medians_run(tmp_path, [1.00, 1.01, 0.99, 1.10])
    assert [point.flag for point in series.points] == ["", "", "", "regression"]
    assert series.points[-1].change == pytest.approx(1.10 / 0.99 - 1)
    assert series.latest_regressed


def test_history_does_not_flag_changes_within_the_noise(tmp_path):
    # +10% is beyond 7%, but this benchmark's rounds spread by 15%: noise, not a regression.
    [series] = medians_run(tmp_path, [1.00, 1.10], iqrs=[0.15, 0.15])
    assert series.points[-1].flag == "" and series.points[-1].noise == pytest.approx(0.15)


def test_history_uses_the_run_to_run_noise_once_there_are_enough_runs(tmp_path):
    # Earlier runs swing by about 12% each time: a further 10% swing is not a regression.
    [series] = medians_run(tmp_path, [1.00, 1.12, 1.00, 1.10])
    assert [point.flag for point in series.points] == ["", "regression", "improvement", ""]


def test_history_flags_improvements_and_keeps_other_configurations_apart(tmp_path):
    write_run(tmp_path, 1, [bench(median=1.0)])
    write_run(tmp_path, 2, [bench(median=0.5), bench(median=0.01, samples=256)])
    all_series = history.build(results.load([tmp_path]))
    assert len(all_series) == 2
    full = next(s for s in all_series if len(s.points) == 2)
    assert full.points[-1].flag == "improvement" and not full.latest_regressed


def test_fail_on_regression_sets_the_exit_status(tmp_path):
    medians_run(tmp_path, [1.0, 1.0, 1.2])
    assert mnistbench("history", tmp_path).returncode == 0
    failed = mnistbench("history", tmp_path, "--fail-on-regression")
    assert failed.returncode == 1
    assert "1 regression(s) in the newest run: epoch vgg resident b128 (cpu)" in failed.stderr


def test_bad_files_are_warned_about_and_the_rest_processed(tmp_path, capsys):
    write_run(tmp_path, 1, [bench(median=2.0), bench(device="cuda:0", median=1.0)])
    (tmp_path / "corrupt.json").write_text('{"benchmarks": [')
    (tmp_path / "foreign.json").write_text('{"name": "some other tool"}')
    (tmp_path / "empty").mkdir()
    broken = bench(device="cuda:0")
    del broken["extra_info"]["samples"]
    write_run(tmp_path / "more", 2, [broken])
    assert cli.main(["ratio", str(tmp_path), str(tmp_path / "empty")]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("mnistbench: warning:")]
    assert len(warnings) == 4, captured.err
    assert any("corrupt.json: skipped, not readable JSON" in line for line in warnings)
    assert any("foreign.json: skipped, not a pytest-benchmark result file" in line for line in warnings)
    assert any("empty: no JSON files in this folder" in line for line in warnings)
    assert any("0002_run.json: skipped benchmark" in line and "extra_info.samples" in line for line in warnings)
    assert "| 2 " in captured.out


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "corrupt.json").write_text("not json")
    run = mnistbench("history", tmp_path)
    assert run.returncode == 2
    assert f"mnistbench: error: no usable pytest-benchmark results in {tmp_path}" in run.stderr
    assert "corrupt.json: skipped" in run.stderr


def assert_png(path: Path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 200 and width > 400


def test_plots_are_valid_pngs(tmp_path):
    write_run(tmp_path, 1, [bench(median=2.0), bench(device="cuda:0", median=0.1),
                            bench(model="googlenet", median=5.0), bench(model="googlenet", device="cuda:0", median=0.5)])
    write_run(tmp_path, 2, [bench(median=2.5), bench(device="cuda:0", median=0.1)])
    assert mnistbench("ratio", tmp_path, "--plot", tmp_path / "ratio.png").returncode == 0
    assert mnistbench("history", tmp_path, "--plot", tmp_path / "history.png").returncode == 0
    assert_png(tmp_path / "ratio.png")
    assert_png(tmp_path / "history.png")


def test_reports_read_the_committed_history():
    stored = results.load([REPO / "results"])
    assert any(result.name.endswith("test_epoch[vgg-cpu-reference]") for result in stored)
    assert all(result.median > 0 for result in stored)
    assert mnistbench("history").returncode == 0
    accelerators = {result.device for result in stored} - {"cpu"}
    ratios = mnistbench("ratio")
    if accelerators:
        assert ratios.returncode == 0 and "speedup" in ratios.stdout
    else:
        assert ratios.returncode == 1 and "no benchmark was run on both" in ratios.stderr
