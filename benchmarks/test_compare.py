"""Machines compared: compare, score, the articles' claims beside the ratios, and the HTML page.

Known answers: a copy of a committed run with every time halved, stored under another machine identity,
reads 2.00x for every benchmark and both geometric means, and scores 2000; hand-made files whose refusals,
reasons and claims are known exactly; the committed Zen 4 and Zen 5 runs, whose benchmarks pair although the
suite renamed its parameters between them. Everything runs in this process.
"""
import base64
import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mnistbench.reports import claims, compare, page, ratio, results, score
from stored import EPYC1, EPYC1_ID, REPO, ZEN4_ID, bench, machine_info, report, table_lines, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUNS = REPO / "results" / "Linux-CPython-3.11-64bit"
# pytest-benchmark's statistics that are times (the rest are counts, or operations per second).
TIMES = ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "ld15iqr", "hd15iqr", "total")
REFERENCE = REPO / score.DEFAULT_REFERENCE
EPYC1_MACHINE = machine_info(cpu=EPYC1, capability="AVX2", gpus=())
EPYC1_HOST = "AMD EPYC (AuthenticAMD 23/1/2; avx2; torch AVX2; 2 cpus)"
ZEN4_HOST = "AMD EPYC (AuthenticAMD 25/17/1; avx2 avx512f avx512_bf16; torch AVX512; 2 cpus)"


def halved_copy(source: Path, folder: Path) -> Path:
    """A copy of the stored run ``source`` with every time halved, stored under another CPU's identity."""
    document = json.loads(source.read_text())
    for stats in (entry["stats"] for entry in document["benchmarks"]):
        stats.update({field: stats[field] / 2 for field in TIMES}, ops=stats["ops"] * 2)
        if "data" in stats:
            stats["data"] = [time / 2 for time in stats["data"]]
    document["machine_info"]["cpu"]["model"] = 99
    folder.mkdir()
    path = folder / source.name
    path.write_text(json.dumps(document))
    return path


def test_a_run_with_every_time_halved_reads_2x_for_every_benchmark_and_both_means(tmp_path, capsys):
    halved = halved_copy(REFERENCE, tmp_path / "faster")
    status, out, err = report(capsys, "compare", REFERENCE, halved, "--format", "json")
    assert status == 0, err
    rows = json.loads(out)
    benchmarks = [row for row in rows if row["benchmark"] != "geometric mean"]
    assert len(benchmarks) == len(json.loads(REFERENCE.read_text())["benchmarks"]) == 21
    assert {row["speedup"] for row in benchmarks} == {2.0} and not any(row["note"] for row in benchmarks)
    assert all(row["a_machine"] != row["b_machine"] and "26/99/1" in row["b_machine"] for row in benchmarks)
    means = {row["tuning"]: (row["speedup"], row["note"]) for row in rows if row["benchmark"] == "geometric mean"}
    assert means == {"base": (pytest.approx(2.0), "over 7 benchmarks"), "peak": (pytest.approx(2.0), "over 8 benchmarks")}
    status, out, err = report(capsys, "score", halved, "--reference", REFERENCE, "--format", "json")
    [row] = json.loads(out)
    assert status == 0 and (row["base"], row["peak"]) == (pytest.approx(2000), pytest.approx(2000))
    assert (row["base_benchmarks"], row["peak_benchmarks"], row["note"]) == ("6/6", "6/6", "")


def test_the_zen4_and_zen5_runs_pair_though_the_suite_renamed_their_parameters():
    zen4, zen5 = (results.load(sorted(RUNS.glob(f"000[{runs}]_*.json"))) for runs in ("1-4", "5-7"))
    comparison = compare.Comparison(zen4, zen5)
    found = {pair.label: pair for pair in comparison.pairs}
    # Run 0001's epochs (parameter pipeline_name) and steps (no variant parameter) pair with run 0005's.
    assert found["epoch vgg reference b128"].a.file.name.startswith("0001_")
    assert found["step-train vgg b128"].a.file.name.startswith("0002_")  # its variant stored as an object
    # The newest comparable runs: run 0007's five seeds refuse to pair with run 0004's one, 0005's seed pairs.
    assert found["time-to-accuracy vgg fast b256"].b.file.name.startswith("0005_")
    refused = {label: pair.mismatch for label, pair in found.items() if pair.mismatch}
    assert refused == {"epoch googlenet fast b64": "samples differs (A 12800, B 60000)",
                       "epoch vgg fast b128": "samples differs (A 12800, B 60000)"}
    assert {tuning: count for tuning, (_, count) in compare.geometric_means(comparison.pairs).items()} == {
        "base": 7, "peak": 2}


def test_compare_names_machines_by_key_identity_or_a_part_only_one_holds(capsys):
    status, by_key, _ = report(capsys, "compare", "m1", "m2", "--results", REPO / "results")
    assert status == 0 and by_key.splitlines()[0].startswith("A = m1, B = m2.")
    zen5 = next(line for line in by_key.splitlines() if line.startswith("- m2: ")).removeprefix("- m2: ")
    status, by_part, _ = report(capsys, "compare", "25/17/1", zen5, "--results", REPO / "results")
    assert status == 0 and by_part.splitlines()[1:] == by_key.splitlines()[1:]
    status, out, err = report(capsys, "compare", "26/2/1", "m1", "--results", REPO / "results")
    assert status == 2 and "'26/2/1' is no file or folder, and names more than one machine" in err
    assert "m2 = AMD EPYC (AuthenticAMD 26/2/1" in err and "m3 = AMD EPYC (AuthenticAMD 26/2/1" in err


def test_a_machine_named_by_its_key_keeps_it_beside_a_file_of_an_earlier_machine(tmp_path, capsys):
    """Keys number the machines of the stored results; a file read from elsewhere, even of an older run, gets
    the next key, so that the B named m1 is m1 in the legend and the table too."""
    write_run(tmp_path / "stored", 5, [bench(median=1.0)])
    earlier = write_run(tmp_path / "elsewhere", 1, [bench(median=2.0)], machine=EPYC1_MACHINE)
    status, out, err = report(capsys, "compare", earlier, "m1", "--results", tmp_path / "stored")
    assert status == 0, err
    assert out.splitlines()[0].startswith(f"A = {earlier}, B = m1.")
    assert f"- m1: {ZEN4_ID}" in out.splitlines() and f"- m2: {EPYC1_ID}" in out.splitlines()
    row = table_lines(out)[0]
    assert [row.split("|")[i].strip() for i in (3, 6)] == ["m2", "m1"], row


def test_the_default_reference_away_from_the_checkout_is_one_line_naming_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, out, err = report(capsys, "score", REPO / "results")
    assert (status, out) == (2, "")
    assert err == (f"mnistbench: error: the default reference {score.DEFAULT_REFERENCE} is not here: run from the "
                   "checkout's root, or name a reference run with --reference RUN\n")


@pytest.mark.parametrize("changed, reason", [
    ({"samples": 256}, "samples differs (A 60000, B 256)"),
    ({"batch_size": 512}, "batch_size differs (A 128, B 512)"),
    ({"dataset": "fashion-mnist"}, "dataset differs (A mnist, B fashion-mnist)"),
    ({"precision": "bf16"}, "precision differs (A fp32, B bf16)"),
    ({"seeds": 5}, "seeds differs (A 1, B 5)"),
])
def test_compare_refuses_pairs_whose_configuration_differs_naming_the_field(tmp_path, capsys, changed, reason):
    write_run(tmp_path / "a", 1, [bench(median=2.0, pipeline="reference"), bench(median=3.0)])
    write_run(tmp_path / "b", 2, [bench(median=1.0, pipeline="reference", **changed), bench(median=1.0)],
              machine=EPYC1_MACHINE)
    status, out, _ = report(capsys, "compare", tmp_path / "a", tmp_path / "b", "--format", "csv")
    rows = list(csv.reader(out.splitlines()))
    assert status == 0 and rows[0] == ["benchmark", "tuning", "a_machine", "a_median_s", "a_spread", "b_machine",
                                       "b_median_s", "b_spread", "speedup", "note"]
    assert rows[1] == ["epoch vgg reference b128", "base", ZEN4_ID, "2.0", "0.5% of 3", EPYC1_ID, "1.0", "1.0% of 3", "",
                       reason]
    assert rows[2][:2] == ["epoch vgg resident b128", ""] and rows[2][-2:] == ["3.0", ""]
    assert rows[3:] == [["geometric mean", tuning, "", "", "", "", "", "", "", "no comparable benchmark"]
                        for tuning in ("base", "peak")]


def test_compare_refuses_other_library_versions_and_lists_what_only_one_side_ran(tmp_path, capsys):
    write_run(tmp_path / "a", 1, [bench(pipeline="reference"), bench(model="googlenet")])
    write_run(tmp_path / "b", 2, [bench(pipeline="reference"), bench(pipeline="resident", model="lenet")],
              machine={**EPYC1_MACHINE, "mnistbench": {**EPYC1_MACHINE["mnistbench"], "torch": "2.11.0"}})
    status, out, err = report(capsys, "compare", tmp_path / "a", tmp_path / "b")
    assert status == 0 and "| torch differs (A 2.14.1, B 2.11.0) |" in out
    assert out.count(ZEN4_ID) == 1 and out.count(EPYC1_ID) == 1, "each machine named once, in the legend"
    assert err.splitlines() == ["mnistbench: 1 benchmark(s) only in A: epoch googlenet resident b128",
                                "mnistbench: 1 benchmark(s) only in B: epoch lenet resident b128"]


def test_compare_refuses_a_folder_of_two_machines_and_plots_the_speedups(tmp_path, capsys):
    write_run(tmp_path / "both", 1, [bench(median=2.0)])
    write_run(tmp_path / "both", 2, [bench(median=1.0)], machine=EPYC1_MACHINE)
    status, _, err = report(capsys, "compare", tmp_path / "both", tmp_path / "both")
    assert status == 2 and err.startswith(f"mnistbench: error: {tmp_path / 'both'} holds the results of more than "
                                          f"one machine; name one of them instead: m1 = {ZEN4_ID}; m2 = {EPYC1_ID}")
    plot = tmp_path / "compare.png"
    status, _, err = report(capsys, "compare", "m1", "m2", "--results", tmp_path / "both", "--plot", plot)
    assert status == 0 and plot.read_bytes()[:8] == PNG_MAGIC


def test_ratio_refuses_time_to_accuracy_pairs_of_different_seeds(tmp_path):
    tta = {"test": "test_time_to_accuracy", "kind": "time-to-accuracy", "setup": "fast", "pipeline": "resident"}
    write_run(tmp_path, 1, [bench(median=20.0, **tta), bench(device="cuda:0", median=2.0, seeds=5, **tta)])
    [pair] = ratio.pairs(results.load([tmp_path]))
    assert pair.speedup is None and pair.mismatch == "seeds differs (cpu 1, cuda:0 5)"
    write_run(tmp_path, 2, [bench(device="cuda:0", median=4.0, seeds=1, **tta)])  # as many seeds as the CPU's
    [pair] = ratio.pairs(results.load([tmp_path]))
    assert pair.speedup == 5.0


def test_ratio_says_why_no_pair_formed_and_shows_the_claims(tmp_path, capsys):
    write_run(tmp_path, 1, [bench(pipeline="reference")])
    write_run(tmp_path, 2, [bench(device="cuda:0", pipeline="reference")],
              machine=machine_info(cpu=EPYC1, capability="AVX2"))
    status, out, err = report(capsys, "ratio", tmp_path)
    lines = err.splitlines()
    assert status == 1 and out == ""
    assert lines[0] == (f"mnistbench: no CPU/accelerator pair: the cuda:0 results come from host {EPYC1_HOST}, which "
                        f"has no CPU result; the CPU results come from host {ZEN4_HOST} (an accelerator is divided only "
                        f"by its own host's CPU)")
    assert lines[1:] == [f"mnistbench: {line}" for line in claims.lines()]
    assert "23x faster on an A100 80GB than on an AMD EPYC 7542 32-Core Processor" in lines[1]


def test_ratio_sets_the_claims_beside_the_articles_job(tmp_path, capsys):
    write_run(tmp_path, 1, [bench(pipeline="reference", median=46.0), bench(device="cuda:0", pipeline="reference", median=2.0),
                            bench(model="googlenet", pipeline="reference", median=100.0),
                            bench(model="googlenet", device="cuda:0", pipeline="reference", median=10.0),
                            bench(median=30.0), bench(device="cuda:0", median=1.0)])
    status, out, _ = report(capsys, "ratio", tmp_path, "--format", "json")
    found = {row["benchmark"]: row["article_claim"] for row in json.loads(out)}
    assert status == 0 and found == {
        "epoch vgg reference b128": "23x faster on an A100 80GB than on an AMD EPYC 7542 32-Core Processor, over 10 "
                                    "epochs of the articles' loop; measured 23.0x",
        # 10 epochs of 60,000 images at (100 - 10) s per 60,000 images: 900 s.
        "epoch googlenet reference b128": "over 3 h saved on an A100 than on a CPU the article does not name, over "
                                         "10 epochs of the articles' loop; measured 0.25 h saved",
        "epoch vgg resident b128": "",
    }


def test_a_claim_beside_partial_epochs_says_they_were_not_the_articles_full_ones(tmp_path, capsys):
    """The quick matrix's 12,800-image epochs against the articles' 60,000: the measured figure is said to be
    over the shorter epochs (the time saved is still scaled to the articles' whole job)."""
    quick = {"pipeline": "reference", "samples": 12_800}
    write_run(tmp_path, 1, [bench(median=10.0, **quick), bench(device="cuda:0", median=0.5, **quick),
                            bench(model="googlenet", median=20.0, **quick),
                            bench(model="googlenet", device="cuda:0", median=2.0, **quick)])
    status, out, _ = report(capsys, "ratio", tmp_path, "--format", "json")
    found = {row["benchmark"]: row["article_claim"] for row in json.loads(out)}
    assert status == 0 and found == {
        "epoch vgg reference b128": "23x faster on an A100 80GB than on an AMD EPYC 7542 32-Core Processor, over 10 "
                                    "epochs of the articles' loop; measured 20.0x over 12,800-image epochs, not the "
                                    "articles' 60,000",
        # 10 epochs of 60,000 images at (20 - 2) s per 12,800 images: 843.75 s.
        "epoch googlenet reference b128": "over 3 h saved on an A100 than on a CPU the article does not name, over "
                                         "10 epochs of the articles' loop; measured 0.23 h saved over 12,800-image "
                                         "epochs, not the articles' 60,000",
    }


# The articles' batch sizes, at which the score lists the steps: a known answer, as the list is versioned.
ARTICLE_BATCHES = {"googlenet": 64, "vgg": 128}


def listed_run(median=1.0, **changed) -> list[dict]:
    """The score's benchmarks as a run of the suite stores them, every median ``median``."""
    found = [bench(model=model, pipeline=setup if setup != "fast" else "resident", setup=setup, median=median,
                   batch_size=batch, **changed)
             for model, batch in ARTICLE_BATCHES.items() for setup in ("reference", "fast")]
    found += [bench(model=model, test="test_step", kind=f"step-{mode}", pipeline=None, setup=variant, median=median / 100,
                    batch_size=batch, samples=batch, params={"batch_size": batch, "mode": mode})
              for model, batch in ARTICLE_BATCHES.items() for mode in ("train", "forward")
              for variant in ("fp32-contiguous-eager-default", "fast")]
    return found


def test_a_score_is_given_only_for_a_complete_half_of_the_list(tmp_path, capsys):
    reference = write_run(tmp_path / "reference", 1, listed_run(median=4.0))
    machine = listed_run(median=1.0)
    machine[1]["extra_info"]["samples"] = 12_800  # the googlenet fast epoch, refused
    del machine[-1]  # the vgg fast forward step, not run
    write_run(tmp_path / "machine", 2, machine, machine=EPYC1_MACHINE)
    status, out, _ = report(capsys, "score", tmp_path / "machine", "--reference", reference, "--format", "json")
    [row] = json.loads(out)
    assert status == 0 and row["machine"] == EPYC1_ID and row["reference"] == str(reference)
    assert (row["base"], row["base_benchmarks"]) == (pytest.approx(4000), "6/6")
    assert (row["peak"], row["peak_benchmarks"]) == (None, "4/6")
    assert row["note"] == ("peak: epoch googlenet fast refused, samples differs (reference 60000, this machine "
                           "12800); step-forward vgg b128 fast not run")


def test_the_default_reference_holds_every_benchmark_the_score_lists(capsys):
    stored = results.load([REFERENCE])
    [found] = score.scores(stored, stored)  # its data-parallel results, of another thread count, are not listed
    assert found.value == {"base": pytest.approx(1000), "peak": pytest.approx(1000)}
    status, out, _ = report(capsys, "score", REFERENCE)
    assert status == 0 and out.startswith(f"score v{score.VERSION} against the reference {score.DEFAULT_REFERENCE}")
    assert [line.split("|")[2].strip() for line in table_lines(out)] == ["1000"]


class Page(HTMLParser):
    """What the page holds: its sections, images, links and text."""

    def __init__(self, text: str):
        super().__init__()
        self.sections, self.images, self.links, self.text = [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
        self.links += [value for name, value in attrs.items() if name in ("src", "href", "action")]

    def handle_data(self, data):
        self.text.append(data)


def test_the_html_page_holds_every_report_and_needs_nothing_beside_it(tmp_path, capsys):
    gpu = bench(device="cuda:0", pipeline="reference", median=0.2, joules_per_image=0.001)
    reference = write_run(tmp_path / "runs", 1, listed_run(median=4.0) + [gpu])
    write_run(tmp_path / "runs", 2, [bench(pipeline="reference", median=4.0),
                                     bench(median=0.1, test="test_distributed", kind="distributed",
                                           params={"world_size": 1}, world_size=1, backend="gloo")])
    write_run(tmp_path / "runs", 3, [bench(pipeline="reference", median=6.0, joules_per_image=0.05)])  # +50%: a regression
    write_run(tmp_path / "other", 4, listed_run(median=2.0), machine=EPYC1_MACHINE)
    html = tmp_path / "report.html"
    status, _, err = report(capsys, "report", tmp_path / "runs", tmp_path / "other", "--html", html,
                            "--reference", reference)
    assert status == 0 and err == f"mnistbench: wrote {html}\n"
    found = Page(html.read_text())
    assert found.sections == list(page.SECTIONS)
    assert len(found.images) == 4  # ratio, comparison, history, scaling: each a PNG in the page itself
    assert all(src.startswith("data:image/png;base64,") for src in found.images)
    assert all(base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC for src in found.images)
    assert all(link.startswith(("#", "data:")) for link in found.links), "nothing fetched from a network"
    text = " ".join(found.text)
    assert ZEN4_ID in text and EPYC1_ID in text and "m3 (B) against the reference (A)" in text
    assert all(claim.quote in text for claim in claims.CLAIMS) and "measured 30.0x" in text
    # both sides of the GPU/CPU pair measured their energy: images per joule and the energy ratio beside the speed
    assert "accelerator_images_per_joule" in text and "30.00x 50.00x" in text
    assert compare.ENERGY_READING not in text, "the machines compared measured none: no energy columns there"
    assert "1 regression(s) in the newest runs: epoch vgg reference b128 (cpu) on m1." in text
