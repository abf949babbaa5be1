"""The idx files of MNIST and Fashion-MNIST, checked before torchvision reads them.

torchvision trusts an idx header and reshapes whatever follows it, so a file cut short fails deep
inside with "shape '[60000, 28, 28]' is invalid for input of size 999984", naming neither the file
nor the fault. Reading the header and comparing the file's size with it names both, in milliseconds.
"""
import struct
from pathlib import Path

IMAGES_MAGIC = 0x00000803  # unsigned bytes, three dimensions: count, rows, columns
LABELS_MAGIC = 0x00000801  # unsigned bytes, one dimension: count
GZIP_MAGIC = b"\x1f\x8b"
SIDE = 28
HEADER_SIZE = {"images": 16, "labels": 8}  # magic, count, and for images rows and columns: 4 bytes each
ITEM_SIZE = {"images": SIDE * SIDE, "labels": 1}
CLASSES = 10  # MNIST's digits and Fashion-MNIST's garments: labels 0 to 9


class IdxError(ValueError):
    """A file is not the idx images or labels file its name promises; the message says why."""


def kind_of(name: str) -> str:
    """``images`` or ``labels``, from a file name such as ``train-images-idx3-ubyte``."""
    return "images" if "images" in name else "labels"


def check(path: Path, kind: str) -> int:
    """The number of images or labels (``kind``) in the idx file ``path``; ``IdxError`` if its header
    is not that kind's, its size disagrees with the header, or a label is not a class (0 to 9: EMNIST's letters
    are 1 to 26, and a label of 10 would fail every step with an index error, on a GPU a device-side assert)."""
    magic, header_size = IMAGES_MAGIC if kind == "images" else LABELS_MAGIC, HEADER_SIZE[kind]
    size = path.stat().st_size
    with open(path, "rb") as file:
        header = file.read(header_size)
    if not header:
        raise IdxError("empty (0 bytes)")
    if header.startswith(GZIP_MAGIC):
        raise IdxError("gzip-compressed, though this name is the extracted file's (archives end in '.gz')")
    if len(header) < header_size:
        raise IdxError(f"truncated: {size} bytes, shorter than the {header_size}-byte idx header")
    found = struct.unpack(">I", header[:4])[0]
    if found != magic:
        other = "labels" if kind == "images" else "images"
        what = f"an idx {other} file" if found == (LABELS_MAGIC if kind == "images" else IMAGES_MAGIC) else "not idx"
        raise IdxError(f"bad magic number 0x{found:08x} ({what}); idx {kind} start with 0x{magic:08x}")
    count = struct.unpack(">I", header[4:8])[0]
    if kind == "images":
        rows, columns = struct.unpack(">II", header[8:16])
        if (rows, columns) != (SIDE, SIDE):
            raise IdxError(f"images of {rows}x{columns} pixels; MNIST's are {SIDE}x{SIDE}")
    expected = header_size + count * ITEM_SIZE[kind]
    if size < expected:
        raise IdxError(f"truncated at {size:,} of {expected:,} bytes (its header announces {count:,} {kind})")
    if size > expected:
        raise IdxError(f"{size - expected:,} bytes longer than its header's {count:,} {kind} ({expected:,} bytes)")
    if kind == "labels":
        labels = path.read_bytes()[header_size:]
        if labels and (largest := max(labels)) >= CLASSES:
            raise IdxError(f"label {largest} at item {labels.index(largest):,}: MNIST's labels are 0 to {CLASSES - 1} "
                           f"(another dataset's file?)")
    return count
