"""The shared-covariance Gaussian model of METHOD.md and its KL divergences."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distunlearn.core.moments import DomainMoments
from distunlearn.errors import DistunlearnError, ParameterError

COVARIANCES = ("ridge", "oas")


@dataclass(frozen=True)
class PooledGaussian:
    """Unwanted domain N(mu1, Sigma) and retained domain N(mu2, Sigma) with pooled Sigma.

    ``whitener`` is W = C^-1 for the Cholesky factor Sigma = C C^T, so that
    (a-b)^T Sigma^-1 (a-b) = ||W (a-b)||^2. Rows are whitened around mu1 (``whiten``); in
    those coordinates the edited mean after any deletion follows from sums alone.
    """

    n1: int
    n2: int
    mu1: np.ndarray
    mu2: np.ndarray
    sigma: np.ndarray
    whitener: np.ndarray
    shrinkage: float = 0.0   # the OAS weight given to trace/d * I (0 without ``covariance="oas"``)

    @classmethod
    def fit(cls, unwanted: DomainMoments, retained: DomainMoments, ridge: float = 1e-6,
            covariance: str = "ridge") -> "PooledGaussian":
        """Pooled within-domain covariance of both domains, plus ``ridge * trace/d * I``.

        ``covariance="oas"`` first shrinks the pooled covariance towards ``trace/d * I`` by the Oracle
        Approximating Shrinkage weight (``oas_shrinkage`` with n = n1 + n2 rows); the ridge term is still
        added after it, so the default ``ridge=1e-6`` keeps guarding against a singular matrix (OAS alone
        can leave one: weight 0 with one feature, a weight near 0 with many rows, an all-zero covariance).
        """
        if covariance not in COVARIANCES:
            raise ParameterError(f"{{covariance}} must be one of {', '.join(COVARIANCES)}, got {covariance!r}",
                                 "covariance")
        if unwanted.n == 0:
            raise ParameterError("the unwanted domain is empty: {unwanted} matches no row", "unwanted")
        if retained.n == 0:
            raise ParameterError("the retained domain is empty: {retained} (default: not {unwanted}) matches no row",
                                 "retained", "unwanted")
        if ridge < 0 or not np.isfinite(ridge):
            raise ParameterError(f"{{ridge}} must be a finite number >= 0, got {ridge}", "ridge")
        d = unwanted.dim
        dof = max(unwanted.n + retained.n - 2, 1)
        sigma = (unwanted.m2 + retained.m2) / dof
        sigma = (sigma + sigma.T) / 2
        shrinkage = 0.0
        if covariance == "oas":
            sigma, shrinkage = oas_shrinkage(sigma, unwanted.n + retained.n)
        trace = float(np.trace(sigma))
        if ridge > 0:
            sigma = sigma + ridge * (trace / d if trace > 0 else 1.0) * np.eye(d)
        whitener = _inverse_cholesky(sigma)
        if whitener is None:
            raise ParameterError(
                f"the pooled covariance is singular ({unwanted.n + retained.n} rows, {d} dims): "
                "pass {ridge} > 0 (e.g. {ridge=1e-3})", "ridge")
        return cls(unwanted.n, retained.n, unwanted.mean, retained.mean, sigma, whitener, shrinkage)

    @classmethod
    def from_parameters(cls, n1: int, n2: int, mu1, mu2, sigma) -> "PooledGaussian":
        """The model of an earlier run, rebuilt from its stored means and covariance."""
        sigma = np.asarray(sigma, dtype=np.float64)
        whitener = _inverse_cholesky(sigma)
        if whitener is None:
            raise DistunlearnError("the stored covariance is singular")
        return cls(n1, n2, np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64), sigma, whitener)

    @property
    def dim(self) -> int:
        return int(self.mu1.shape[0])

    @property
    def delta(self) -> np.ndarray:
        """W (mu1 - mu2): the mean shift in whitened coordinates."""
        return self.whitener @ (self.mu1 - self.mu2)

    @property
    def kappa(self) -> float:
        """KL(p1 || p2), the removal effect of deleting the whole unwanted domain."""
        return self.kl(self.mu1, self.mu2)

    def kl(self, a: np.ndarray, b: np.ndarray) -> float:
        """KL(N(a, Sigma) || N(b, Sigma)) = 0.5 (a-b)^T Sigma^-1 (a-b)."""
        v = self.whitener @ (np.asarray(a, dtype=np.float64) - b)
        return 0.5 * float(v @ v)

    def whiten(self, x: np.ndarray) -> np.ndarray:
        """Rows W (x - mu1), float64."""
        return (np.asarray(x, dtype=np.float64) - self.mu1) @ self.whitener.T


def oas_shrinkage(sigma: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """Oracle Approximating Shrinkage (Chen, Wiesel, Eldar & Hero 2010) of the covariance ``sigma`` of
    ``n`` rows: ``((1 - s) * sigma + s * trace/d * I, s)``, with the weight ``s`` that
    ``sklearn.covariance.OAS`` uses. ``s`` does not change when ``sigma`` is scaled, so any normalisation
    (n or n - 2) gives the same weight. One feature: no shrinkage, as scikit-learn does."""
    sigma = np.asarray(sigma, dtype=np.float64)
    d = sigma.shape[0]
    if d == 1:
        return sigma.copy(), 0.0
    alpha = float(np.mean(sigma**2))
    mu = float(np.trace(sigma)) / d
    num = alpha + mu**2
    den = (n + 1) * (alpha - mu**2 / d)
    shrinkage = 1.0 if den == 0 else min(num / den, 1.0)
    shrunk = (1.0 - shrinkage) * sigma
    shrunk.flat[:: d + 1] += shrinkage * mu
    return shrunk, shrinkage


def _inverse_cholesky(sigma: np.ndarray) -> np.ndarray | None:
    """C^-1 for sigma = C C^T, or None when sigma is not numerically positive definite."""
    if not np.all(np.isfinite(sigma)):
        return None
    try:
        chol = np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        return None
    diag = np.diag(chol)
    if diag.min() <= 1e-7 * max(diag.max(), np.finfo(float).tiny):
        return None
    return np.linalg.inv(chol)
