"""Hand-made pytest-benchmark result files for the reports' tests: benchmarks, machine info and runs as the
suite stores them, with machine identities known exactly (two CPUs that both call themselves "AMD EPYC"), and
the ``mnistbench`` command run in this process."""
import json
import statistics
from pathlib import Path

from mnistbench import cli

REPO = Path(__file__).resolve().parents[1]


# The setup parameter of each timed test: ``fast`` is one of its values.
SETUP_PARAMETERS = {"test_epoch": "setup", "test_time_to_accuracy": "recipe_name", "test_step": "step_variant"}
# pytest-benchmark's machine_info["cpu"] (py-cpuinfo) for two CPUs that both call themselves "AMD EPYC".
ZEN4 = {"vendor_id_raw": "AuthenticAMD", "brand_raw": "AMD EPYC", "family": 25, "model": 17, "stepping": 1,
        "count": 2, "flags": ["avx", "avx2", "avx512_bf16", "avx512bw", "avx512f", "fma"]}
EPYC1 = {"vendor_id_raw": "AuthenticAMD", "brand_raw": "AMD EPYC", "family": 23, "model": 1, "stepping": 2,
         "count": 2, "flags": ["avx", "avx2", "fma"]}
ZEN4_ID = "AMD EPYC (AuthenticAMD 25/17/1; avx2 avx512f avx512_bf16; torch AVX512; 2 cpus; 2 threads)"
EPYC1_ID = "AMD EPYC (AuthenticAMD 23/1/2; avx2; torch AVX2; 2 cpus; 2 threads)"
H100 = {"name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.2, "compute_capability": "9.0", "driver": "570.86.15"}


def bench(model="vgg", device="cpu", median=1.0, iqr=0.01, kind="epoch", pipeline="resident", test="test_epoch",
          setup=None, params=None, data=None, **extra):
    """One stored benchmark: ``extra`` changes its extra_info, ``params`` adds test parameters, ``data`` gives
    its rounds (as ``--benchmark-save-data`` stores them), their median its median."""
    info = {"kind": kind, "model": model, "device": device, "device_name": f"{device} model", "batch_size": 128,
            "samples": 60_000, "dataset": "mnist", "pipeline": pipeline, "precision": "fp32",
            "memory_format": "contiguous", "compile": "eager", "threads": 2}
    info.update(extra)
    setup = setup or pipeline
    params = {"model_name": model, "device": device, SETUP_PARAMETERS.get(test, "pipeline_name"): setup, **(params or {})}
    name = f"benchmarks/{test}.py::{test}[{model}-{device}-{setup}]"
    stats = {"median": median, "iqr": iqr, "rounds": 3}
    if data is not None:
        stats.update(median=statistics.median(data), rounds=len(data), data=list(data))
    return {"name": name.split("::")[1], "fullname": name, "params": params, "extra_info": info, "stats": stats}


def machine_info(cpu=ZEN4, capability="AVX512", gpus=(H100,), torch_version="2.14.1") -> dict:
    """Machine info as the suite stores it: pytest-benchmark's ``cpu`` block beside ours."""
    return {"cpu": cpu, "mnistbench": {"torch": torch_version, "torchvision": "0.29.1", "cpu_name": "AMD EPYC",
                                       "cpu_threads": 2, "cpu_capability": capability, "gpus": list(gpus)}}


def write_run(folder: Path, index: int, benchmarks, torch_version="2.14.1", machine=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{index:04d}_run.json"
    path.write_text(json.dumps({
        "machine_info": machine or machine_info(torch_version=torch_version),
        "commit_info": {}, "benchmarks": benchmarks, "version": "5.3.1",
        "datetime": f"2026-11-{index:02d}T10:00:00+00:00",
    }))
    return path


def report(capsys, *args) -> tuple[int, str, str]:
    """``mnistbench ARGS`` in this process: exit status, standard output, standard error."""
    status = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def table_lines(markdown: str) -> list[str]:
    """The rows of the Markdown table in a report's output, less its header and rule."""
    return [line for line in markdown.splitlines() if line.startswith("| ")][1:]
