"""The articles' claims, as data to set beside what was measured.

Both articles (posts of the 炼丹侠 GPU platform, in the project's ``seeds/``) trained for 10 epochs in their
own loop (the ``reference`` pipeline and article recipe here) on an A100 server and on a CPU, and printed
no time at all. Their words:

- VGGNet: "本次训练使用的服务器为炼丹侠平台A100服务器,其中GPU型号为A100 80GB,CPU使用了AMD EPYC 7542 32-Core
  Processor" and "相比于CPU训练,使用A100训练的VGGNet时间性能提升了23倍" (the server: an A100 80GB and an AMD
  EPYC 7542 32-Core Processor; against training on the CPU, training VGGNet on the A100 improved its time
  23-fold).
- GoogLeNet: "在炼丹侠平台中分别通过A100和CPU进行训练" and "相比于CPU计算,使用A100进行训练的时间节省了3个多小时"
  (trained on the platform's A100 and on a CPU; against computing on the CPU, training on the A100 saved more
  than 3 hours). That article names neither the A100's memory nor the CPU.
"""
from dataclasses import dataclass

from ..data import TRAIN_IMAGES
from .pairs import Pair

EPOCHS = 10  # the articles' job: 10 epochs of the MNIST training set (``TRAIN_IMAGES`` each)


@dataclass(frozen=True)
class Claim:
    model: str  # the registry's name (``models.names()``)
    quote: str  # the article's sentence
    gpu: str
    cpu: str
    speedup: float | None = None  # CPU time over A100 time, as claimed
    saved_hours: float | None = None  # CPU time less A100 time over the 10 epochs: more than this

    @property
    def text(self) -> str:
        """The claim in one line, its machines named."""
        what = f"{self.speedup:g}x faster" if self.speedup else f"over {self.saved_hours:g} h saved"
        return f"{what} on {self.gpu} than on {self.cpu}, over {EPOCHS} epochs of the articles' loop"

    def measured(self, pair: Pair) -> str | None:
        """The same quantity from a measured CPU/accelerator pair of epochs: the speedup, or the time the
        accelerator saves over the articles' 10 epochs (from the two medians), saying so when the epochs were
        partial (the quick matrix's 12,800 images), not the articles' full ones; None if the pair is refused."""
        if pair.speedup is None:
            return None
        samples = pair.a.extra_info["samples"]
        partial = f" over {samples:,}-image epochs, not the articles' {TRAIN_IMAGES:,}" * (samples != TRAIN_IMAGES)
        if self.speedup:
            return f"{pair.speedup:.1f}x{partial}"
        per_image = (pair.a.median - pair.b.median) / samples
        return f"{per_image * EPOCHS * TRAIN_IMAGES / 3600:.2f} h saved{partial}"


CLAIMS = (
    Claim("vgg", "相比于CPU训练,使用A100训练的VGGNet时间性能提升了23倍", gpu="an A100 80GB",
          cpu="an AMD EPYC 7542 32-Core Processor", speedup=23),
    Claim("googlenet", "相比于CPU计算,使用A100进行训练的时间节省了3个多小时", gpu="an A100",
          cpu="a CPU the article does not name", saved_hours=3),
)


def about(pair: Pair) -> Claim | None:
    """The claim made about the benchmark of ``pair``: the articles' own job, an epoch of the ``reference`` loop
    with the article's recipe on MNIST (a partial one is said so beside it, ``Claim.measured``)."""
    a = pair.a
    if a.test != "test_epoch" or a.params.get("setup") != "reference" or a.extra_info["dataset"] != "mnist":
        return None
    return next((claim for claim in CLAIMS if claim.model == a.extra_info["model"]), None)


def lines() -> list[str]:
    """Every claim on a line of its own, for a report that has no measured pair to set it beside."""
    return [f"the {claim.model} article: {claim.text} (\"{claim.quote}\")" for claim in CLAIMS]
