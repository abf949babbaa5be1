"""The reports over stored results: ratios, history and regressions, bad files, plots, the command line.

Hand-made pytest-benchmark files whose expected ratios, regressions, labels and machine identities are
known exactly (two CPUs that share the name "AMD EPYC", files from before the identities), plus the real
CPU history committed under results/. The reports run in this process (``cli.main``); one test goes
through ``python -m mnistbench``.
"""
import json
from pathlib import Path

import cpuinfo  # py-cpuinfo: what pytest-benchmark stores as machine_info["cpu"]
import pytest
import torch

from mnistbench import cli, machine
from mnistbench.reports import history, ratio, results
from stored import EPYC1, EPYC1_ID, REPO, ZEN4, ZEN4_ID, bench, machine_info, report, table_lines, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_ratio_is_the_cpu_median_over_the_accelerator_median(tmp_path):
    write_run(tmp_path, 1, [bench(median=2.0), bench(device="cuda:0", median=0.25)])
    [pair] = ratio.pairs(results.load([tmp_path]))
    assert pair.speedup == 8.0
    assert ratio.row(pair)["benchmark"] == "epoch vgg resident b128"


def test_ratio_uses_the_newest_run_per_device(tmp_path):
    write_run(tmp_path, 1, [bench(median=4.0), bench(device="cuda:0", median=0.5)])
    write_run(tmp_path, 2, [bench(median=2.0)])
    write_run(tmp_path, 3, [bench(device="mps", median=1.0)])
    found = {pair.b.device: pair.speedup for pair in ratio.pairs(results.load([tmp_path]))}
    assert found == {"cuda:0": 4.0, "mps": 2.0}


@pytest.mark.parametrize("changed, reason", [
    ({"samples": 256}, "samples differs (cpu 60000, cuda:0 256)"),
    ({"dataset": "synthetic"}, "dataset differs (cpu mnist, cuda:0 synthetic)"),
    ({"precision": "bf16"}, "precision differs (cpu fp32, cuda:0 bf16)"),
    ({"convolution": "matmul"}, "convolution differs (cpu native, cuda:0 matmul)"),  # cpu: stored before the field
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


def test_ratio_formats(tmp_path, capsys):
    write_run(tmp_path, 1, [bench(median=3.0), bench(device="cuda:0", median=1.5)])
    for fmt, check in [("csv", lambda out: out.splitlines()[0].startswith("benchmark,cpu,")),
                       ("json", lambda out: json.loads(out)[0]["speedup"] == 2.0),
                       ("markdown", lambda out: out.startswith(f"- m1: {ZEN4_ID}\n") and "\n| benchmark" in out
                                                and "| 2.00x " in out)]:
        status, out, err = report(capsys, "ratio", tmp_path, "--format", fmt)
        assert status == 0 and check(out), out + err


@pytest.mark.parametrize("test, kind", [("test_epoch", "epoch"), ("test_time_to_accuracy", "time-to-accuracy"),
                                        ("test_step", "step-train")])
def test_ratio_divides_fast_by_fast_naming_both_variants(tmp_path, test, kind):
    write_run(tmp_path, 1, [
        bench(test=test, kind=kind, setup="fast", median=6.0, precision="bf16", memory_format="channels_last",
              optimizer="foreach", convolution="matmul"),
        bench(device="cuda:0", test=test, kind=kind, setup="fast", median=0.2, precision="bf16",
              memory_format="channels_last", compile="cudagraphs", optimizer="fused"),
    ])
    [pair] = ratio.pairs(results.load([tmp_path]))
    assert pair.speedup == pytest.approx(30.0)
    row = ratio.row(pair)
    assert row["benchmark"] == f"{kind} vgg fast b128"
    assert (row["cpu_variant"], row["accelerator_variant"]) == ("bf16-channels_last-eager-foreach-matmul",
                                                                "bf16-channels_last-cudagraphs-fused")


@pytest.mark.parametrize("changed, reason", [
    ({"samples": 256}, "samples differs (cpu 60000, cuda:0 256)"),
    ({"batch_size": 512}, "batch_size differs (cpu 128, cuda:0 512)"),
    ({"dataset": "synthetic"}, "dataset differs (cpu mnist, cuda:0 synthetic)"),
])
def test_fast_pairs_still_refuse_anything_but_the_variant_differing(tmp_path, changed, reason):
    write_run(tmp_path, 1, [bench(setup="fast", median=2.0, precision="bf16"),
                            bench(device="cuda:0", setup="fast", median=0.5, compile="cudagraphs", **changed)])
    [pair] = ratio.pairs(results.load([tmp_path]))
    assert pair.speedup is None and pair.mismatch == reason


def test_like_for_like_pairs_ignore_only_the_optimizer_implementation(tmp_path):
    write_run(tmp_path, 1, [bench(median=2.0, optimizer="foreach"),
                            bench(device="cuda:0", median=0.5, optimizer="fused"),
                            bench(pipeline="reference", median=2.0),
                            bench(pipeline="reference", device="cuda:0", median=0.5, precision="bf16")])
    found = {pair.label: (pair.speedup, pair.mismatch) for pair in ratio.pairs(results.load([tmp_path]))}
    assert found == {"epoch vgg resident b128": (4.0, None),
                     "epoch vgg reference b128": (None, "precision differs (cpu fp32, cuda:0 bf16)")}


def test_ratio_divides_each_accelerator_by_its_own_hosts_cpu(tmp_path, capsys):
    write_run(tmp_path, 1, [bench(median=3.0), bench(device="cuda:0", median=0.5)])
    # Newer, on another machine whose CPU has the same name but is three times slower.
    write_run(tmp_path, 2, [bench(median=9.0)], machine=machine_info(cpu=EPYC1, capability="AVX2", gpus=()))
    [pair] = ratio.pairs(results.load([tmp_path]))
    assert (pair.speedup, ratio.row(pair)["cpu"]) == (6.0, ZEN4_ID)
    assert ratio.row(pair)["accelerator"] == "cuda:0 NVIDIA H100 80GB HBM3 (79.2 GiB; sm 9.0; driver 570.86.15)"
    status, out, _ = report(capsys, "ratio", tmp_path)
    assert status == 0 and ZEN4_ID in out and EPYC1_ID not in out


def test_summary_of_a_one_device_run_is_empty_and_of_two_devices_is_the_ratio_table():
    document = {"datetime": "2026-11-01T00:00:00", "benchmarks": [bench(median=2.0)]}
    assert ratio.summary(document) is None
    document["benchmarks"].append(bench(device="cuda:0", median=0.1))
    assert "| 20.00x " in ratio.summary(document)


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
    assert [series.label for series in all_series] == ["epoch vgg resident b128 (cpu, 256 samples)",
                                                       "epoch vgg resident b128 (cpu, 60000 samples)"]
    full = all_series[1]
    assert len(full.points) == 2 and full.points[-1].flag == "improvement" and not full.latest_regressed


def test_history_labels_name_only_what_sets_a_series_apart(tmp_path):
    write_run(tmp_path, 1, [bench(median=1.0), bench(device="cuda:0", median=0.1), bench(model="googlenet"),
                            bench(dataset="fashion-mnist"), bench(test="test_other")])
    assert [series.label for series in history.build(results.load([tmp_path]))] == [
        "epoch googlenet resident b128 (cpu)",
        "epoch vgg resident b128 (cpu, fashion-mnist, test_epoch[vgg-cpu-resident])",
        "epoch vgg resident b128 (cpu, mnist, test_epoch[vgg-cpu-resident])",
        "epoch vgg resident b128 (cpu, mnist, test_other[vgg-cpu-resident])",
        "epoch vgg resident b128 (cuda:0)",
    ]


def test_two_cpus_of_the_same_name_are_never_one_series(tmp_path, capsys):
    write_run(tmp_path, 1, [bench(median=10.0)])
    write_run(tmp_path, 2, [bench(median=30.0)], machine=machine_info(cpu=EPYC1, capability="AVX2"))
    write_run(tmp_path, 3, [bench(median=10.2)])
    all_series = history.build(results.load([tmp_path]))
    assert sorted((series.label, series.machine, len(series.points)) for series in all_series) == [
        ("epoch vgg resident b128 (cpu)", EPYC1_ID, 1),
        ("epoch vgg resident b128 (cpu)", ZEN4_ID, 2),
    ]
    assert not any(point.flag for series in all_series for point in series.points)
    status, out, err = report(capsys, "history", tmp_path, "--fail-on-regression")
    assert status == 0 and "regression" not in err
    # Each machine named once, in the legend before the table, by its key in the order it first appears.
    assert out.startswith(f"- m1: {ZEN4_ID}\n- m2: {EPYC1_ID}\n\n| benchmark")
    assert out.count(ZEN4_ID) == 1 and out.count(EPYC1_ID) == 1
    assert [line.split("|")[2].strip() for line in table_lines(out)] == ["m1", "m1", "m2"]


def test_files_from_before_the_identities_still_load(tmp_path):
    """Runs stored before machine identities: py-cpuinfo's block from pytest-benchmark, GPU names only; or neither."""
    old = {"torch": "2.14.1", "torchvision": "0.29.1", "cpu_name": "AMD EPYC", "cpu_threads": 2,
           "gpus": ["NVIDIA A100-SXM4-40GB"]}
    write_run(tmp_path, 1, [bench(), bench(device="cuda:0", device_name="NVIDIA A100-SXM4-40GB")],
              machine={"cpu": ZEN4, "mnistbench": old})
    write_run(tmp_path, 2, [bench(threads=1)], machine={"mnistbench": old})
    found = {(result.run_time.day, result.device): result.machine for result in results.load([tmp_path])}
    assert found == {
        (1, "cpu"): "AMD EPYC (AuthenticAMD 25/17/1; avx2 avx512f avx512_bf16; torch ISA unknown; 2 cpus; 2 threads)",
        (1, "cuda:0"): "NVIDIA A100-SXM4-40GB (memory and driver unknown)",
        (2, "cpu"): "AMD EPYC (unknown ISA; torch ISA unknown; 1 threads)",
    }


def test_machine_info_identifies_this_cpu_by_what_decides_its_speed():
    """What the suite stores on this machine gives an identity with no unknown part."""
    document = {"datetime": "2026-11-01T00:00:00", "benchmarks": [bench(threads=torch.get_num_threads())],
                "machine_info": {"cpu": cpuinfo.get_cpu_info(), "mnistbench": machine.info()}}
    [result] = results.parse(document, "this run")
    assert "unknown" not in result.machine and result.machine.startswith(result.host[:-1])
    assert f"; torch {torch.backends.cpu.get_cpu_capability()}; " in result.machine
    assert result.machine.endswith(f"; {torch.get_num_threads()} threads)")


@pytest.mark.parametrize("text", [
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  Thu Jan 23 23:43:38 UTC 2025\nGCC version: gcc 12\n",
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  (dvs-builder@U16)\n",
])
def test_the_nvidia_driver_version_is_read_from_the_kernel_module(tmp_path, monkeypatch, text):
    (tmp_path / "version").write_text(text)
    monkeypatch.setattr(machine, "NVIDIA_DRIVER", tmp_path / "version")
    assert machine.nvidia_driver() == "570.86.15"
    monkeypatch.setattr(machine, "NVIDIA_DRIVER", tmp_path / "absent")
    assert machine.nvidia_driver() is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_identity_holds_name_memory_and_capability():
    properties = machine.gpu(0)
    assert properties["name"] == torch.cuda.get_device_name(0) and properties["memory_gib"] > 1
    assert properties["compute_capability"] == "{}.{}".format(*torch.cuda.get_device_capability(0))


def test_fail_on_regression_sets_the_exit_status(tmp_path, capsys):
    medians_run(tmp_path, [1.0, 1.0, 1.2])
    assert report(capsys, "history", tmp_path)[0] == 0
    status, _, err = report(capsys, "history", tmp_path, "--fail-on-regression")
    assert status == 1
    assert "1 regression(s) in the newest run: epoch vgg resident b128 (cpu)" in err


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
    assert "| 2.00x " in captured.out


def test_nothing_usable_is_an_error(tmp_path, capsys):
    (tmp_path / "corrupt.json").write_text("not json")
    status, _, err = report(capsys, "history", tmp_path)
    assert status == 2
    assert f"mnistbench: error: no usable pytest-benchmark results in {tmp_path}" in err
    assert "corrupt.json: skipped" in err


def assert_png(path: Path):
    import matplotlib.image  # the reports import matplotlib only to draw: so does this file

    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 200 and width > 400


def test_plots_are_valid_pngs(tmp_path, capsys):
    write_run(tmp_path, 1, [bench(median=2.0), bench(device="cuda:0", median=0.1),
                            bench(model="googlenet", median=5.0), bench(model="googlenet", device="cuda:0", median=0.5),
                            bench(kind="step-train", pipeline=None, test="test_step", median=0.1)])
    write_run(tmp_path, 2, [bench(median=2.5), bench(device="cuda:0", median=0.1),
                            bench(kind="step-train", pipeline=None, test="test_step", median=0.1)])
    assert report(capsys, "ratio", tmp_path, "--plot", tmp_path / "ratio.png")[0] == 0
    status, _, err = report(capsys, "history", tmp_path, "--plot", tmp_path / "history.png")
    assert status == 0 and f"wrote {tmp_path / 'history.png'} (2 series with a single run left out)" in err
    assert_png(tmp_path / "ratio.png")
    assert_png(tmp_path / "history.png")


def test_a_history_of_single_runs_has_no_trend_to_plot(tmp_path, capsys):
    write_run(tmp_path, 1, [bench(median=2.0), bench(model="googlenet", median=5.0)])
    status, out, err = report(capsys, "history", tmp_path, "--plot", tmp_path / "history.png")
    assert status == 2 and len(table_lines(out)) == 2
    assert ("error: no benchmark has two runs of the same configuration on the same machine yet, nothing to plot "
            "(2 single-run series)") in err
    assert not (tmp_path / "history.png").exists()


def test_reports_read_the_committed_history(capsys):
    stored = results.load([REPO / "results"])
    assert any(result.name.endswith("test_epoch[vgg-cpu-reference]") for result in stored)
    assert all(result.median > 0 for result in stored)
    status, out, _ = report(capsys, "history", REPO / "results")
    series = {(line.split("|")[1].strip(), line.split("|")[2].strip()) for line in table_lines(out)}
    assert status == 0 and len(series) == len(history.build(stored))  # a label of its own on its machine
    identities = {result.machine for result in stored}
    assert not any(identity in line for line in table_lines(out) for identity in identities), \
        "machines are named once, by key, not in every row"
    accelerators = {result.device for result in stored} - {"cpu"}
    status, out, err = report(capsys, "ratio", REPO / "results")
    if accelerators:
        assert status == 0 and "speedup" in out
    else:
        assert status == 1 and "no CPU/accelerator pair: every result read ran on the CPU" in err
