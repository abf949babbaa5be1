"""The articles' own model classes, executed from their published code, for compatibility tests."""
import os
import re
from pathlib import Path

import pytest

ARTICLE_CLASSES = {"googlenet": "GoogLeNet", "vgg": "VGGNet"}
SEEDS = Path(os.environ.get("MNISTBENCH_SEEDS", Path(__file__).resolve().parents[2] / "shared" / "seeds"))


def article_model_class(model_name):
    """The article's class for ``model_name``, from its code in ``../shared/seeds`` (or $MNISTBENCH_SEEDS)."""
    class_name = ARTICLE_CLASSES[model_name]
    texts = [p.read_text(encoding="utf-8") for p in sorted(SEEDS.glob("*.txt"))] if SEEDS.is_dir() else []
    text = next((t for t in texts if f"class {class_name}(" in t), None)
    if text is None:
        pytest.skip(f"the article code of {class_name} is not under {SEEDS} (set MNISTBENCH_SEEDS)")
    # The first listing's class definitions run from the first 'class ' line to the next top-level comment.
    code = re.search(r"^class .*?(?=^#)", text, re.DOTALL | re.MULTILINE).group(0)
    namespace = {}
    exec("import torch\nimport torch.nn as nn\n" + code, namespace)
    return namespace[class_name]
