"""Brute-force reference of the method, written independently of distunlearn.core."""
from __future__ import annotations

import numpy as np


def pooled_covariance(x1: np.ndarray, x2: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    scatter = sum((x - x.mean(0)).T @ (x - x.mean(0)) for x in (x1, x2))
    sigma = scatter / max(len(x1) + len(x2) - 2, 1)
    d = sigma.shape[0]
    return sigma + ridge * np.trace(sigma) / d * np.eye(d)


def kl(a: np.ndarray, b: np.ndarray, sigma: np.ndarray) -> float:
    diff = a - b
    return 0.5 * float(diff @ np.linalg.solve(sigma, diff))


def scores(rule: str, x1: np.ndarray, x2: np.ndarray, sigma: np.ndarray, random_keys=None) -> np.ndarray:
    mu1, mu2 = x1.mean(0), x2.mean(0)
    prec = np.linalg.inv(sigma)
    if rule == "distance_to_retained":
        return np.array([np.linalg.norm(x - mu2) for x in x1])
    if rule == "likelihood_ratio":
        w = prec @ (mu1 - mu2)
        return np.array([(x - (mu1 + mu2) / 2) @ w for x in x1])
    if rule == "ambiguous_first":
        w = prec @ (mu1 - mu2)
        return np.array([((mu1 + mu2) / 2 - x) @ w for x in x1])
    if rule == "mahalanobis_to_retained":
        return np.array([np.sqrt((x - mu2) @ prec @ (x - mu2)) for x in x1])
    if rule == "cosine_to_retained":
        return np.array([1 - x @ mu2 / (np.linalg.norm(x) * np.linalg.norm(mu2)) for x in x1])
    if rule == "closest_to_unwanted":
        return np.array([-np.linalg.norm(x - mu1) for x in x1])
    if rule == "random":
        return np.asarray(random_keys, dtype=float)
    raise ValueError(rule)


def curves(x1, x2, order, sigma):
    """KL(p1||p_f) and KL(p2||p_f) for every f = 0..n1, refitting the edited mean each time."""
    mu1, mu2 = x1.mean(0), x2.mean(0)
    removal, preservation = [], []
    for f in range(len(x1) + 1):
        kept = np.delete(x1, order[:f], axis=0)
        m_f = np.vstack([x2, kept]).mean(0)
        removal.append(kl(mu1, m_f, sigma))
        preservation.append(kl(mu2, m_f, sigma))
    return np.array(removal), np.array(preservation)


def smallest_budget(x1, x2, ids, rule, alpha, epsilon, ridge=1e-6, random_keys=None):
    """(f, indices of deleted rows of x1) by brute force; f None when infeasible."""
    sigma = pooled_covariance(x1, x2, ridge)
    s = scores(rule, x1, x2, sigma, random_keys)
    order = np.array(sorted(range(len(x1)), key=lambda i: (-s[i], ids[i])), dtype=int)
    removal, preservation = curves(x1, x2, order, sigma)
    ok = np.flatnonzero((removal >= alpha) & (preservation <= epsilon))
    if not ok.size:
        return None, None
    f = int(ok[0])
    return f, order[:f]
