"""The ``extra_info`` every benchmark stores, so a result can be read, compared and divided on its own."""
import torch

from . import backends, devices, energy, flops, peaks
from .variants import Variant


def extra_info(benchmark, *, kind: str, model_name: str, device: str, batch_size: int, samples: int,
               dataset: str, pipeline: str | None, train: bool, final_loss: float | None,
               variant: Variant = Variant(), first_step_seconds: float | None = None,
               warm_up_seconds: float | None = None, images_timed: int | None = None, setup=None,
               watched: dict | None = None) -> dict:
    """Configuration and derived speed of one timed benchmark.

    ``samples`` is the number of images of one step or epoch. Images per second are ``samples`` over the
    median round, or, where rounds differ in their work (time to accuracy: seeds that train different
    numbers of epochs), ``images_timed`` over the total time of all rounds. ``setup`` (a ``setups.Setup``)
    adds how the ``fast`` variant was chosen. Throughput fields are present only when pytest-benchmark
    actually timed the rounds (not under ``--benchmark-disable``). Utilisation is achieved over a peak for
    the precision used: the measured matrix-product probe on a CPU, the data sheet on a listed GPU (with the
    probe beside it). Peak memory is read since the case started (``devices.peak_memory`` says what was
    read). The backend settings in effect are read, not assumed (``backends.describe``). ``watched`` (what the
    case's watchers recorded, ``watch.Watching.info``) adds the energy per round and per image where the
    energy was measured (``energy.figures``).
    """
    flops_per_image = flops.per_image(model_name, train)
    peak_mib, peak_source = devices.peak_memory(device)
    device_name = devices.name(device)
    info = {
        "kind": kind,
        "model": model_name,
        "device": device,
        "device_name": device_name,
        "batch_size": batch_size,
        "samples": samples,
        "dataset": dataset,
        "pipeline": pipeline,
        "precision": variant.precision,
        "memory_format": variant.memory_format,
        "compile": variant.compile,
        "optimizer": variant.optimizer,
        "convolution": variant.convolution,
        "first_step_seconds": first_step_seconds,
        "warm_up_seconds": warm_up_seconds,
        **({"compile_cache": _compile_cache(variant, setup)} if variant.compiles else {}),
        "backends": backends.describe(device),
        "threads": torch.get_num_threads(),
        "final_loss": final_loss,
        "flops_per_image": flops_per_image,
        "peak_memory_mib": round(peak_mib, 1),
        "peak_memory_source": peak_source,
        **(setup.info() if setup is not None else {}),
    }
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        images_per_second = (samples / stats.stats.median if images_timed is None
                             else images_timed / stats.stats.total)
        info["images_per_second"] = images_per_second
        info["achieved_tflops"] = flops_per_image * images_per_second / 1e12
        measured = peaks.measured_tflops(device, variant.precision, torch.get_num_threads())
        datasheet = peaks.datasheet_tflops(device_name, variant.precision)
        info["measured_peak_tflops"] = measured
        info["measured_peak_method"] = peaks.probe_description(device)
        if datasheet is not None:
            info["datasheet_peak_tflops"] = datasheet
        info["peak_tflops"] = datasheet or measured
        info["peak_source"] = "datasheet" if datasheet else "measured"
        info["utilisation"] = info["achieved_tflops"] / info["peak_tflops"]
        info.update(energy.figures(watched or {}, round_seconds=stats.stats.median, images_per_second=images_per_second,
                                   to_target=kind == "time-to-accuracy"))
    return info


def median_seconds(benchmark) -> float | None:
    """A timed benchmark's median round in seconds; None where pytest-benchmark timed nothing (disabled)."""
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats is not None else None


def _compile_cache(variant: Variant, setup) -> str:
    """What ``first_step_seconds`` of a compiled case measured: Dynamo's cache is emptied for every case,
    but a variant the fast probe has just compiled finds Inductor's caches warm."""
    if setup is not None and setup.choice is not None and setup.choice.source == "probe":
        return "warm: the fast probe compiled this variant earlier in this run"
    return "as found: Dynamo's cache emptied for the case, Inductor's on-disk caches as earlier runs left them"
