"""Confidence limits for the mean of paired per-seed differences, by one of two methods, both
valid at small n:

- "t": Student's t-interval on the paired differences (sample std with ddof=1) and its two-sided
  p-value. It needs at least two seeds and some spread between them; otherwise the interval is
  unbounded (one seed) or undefined (identical differences on every seed), never a crash.
- "sign_flip": the exact sign-flip permutation test, which assumes only that the differences are
  symmetric about the effect. Its interval inverts the test: the limits are the k-th smallest and
  largest of the 2^n - 1 subset means (Hartigan 1969), with k = floor(alpha * 2^(n-1)); at 95% it
  is unbounded below n = 6 seeds (the smallest exact p-value is then 2 / 2^n = 1/16).
"""

import math
from typing import Literal

import numpy as np
from scipy import stats

Method = Literal["t", "sign_flip"]

# The sign-flip test enumerates 2^n sign patterns; beyond 16 seeds the t-interval is the tool.
MAX_SIGN_FLIP_N = 16
METHOD_NAMES: dict[str, str] = {"t": "paired t", "sign_flip": "exact sign-flip"}


def lower_limit(d: np.ndarray, method: Method, alpha: float) -> tuple[float, float]:
    """The lower confidence limit (one-sided level alpha / 2) of the effect behind the paired
    differences `d`, and the one-sided p-value of "no effect" against "effect > 0"."""
    n = d.size
    if method == "t":
        if n < 2:
            return -math.inf, math.nan
        if np.any(d == -np.inf):  # a censored denominator: no lower limit, no evidence
            return -math.inf, 1.0
        sd = d.std(ddof=1)
        if sd == 0:
            return math.nan, math.nan
        se = sd / math.sqrt(n)
        mean = d.mean()
        low = mean - stats.t.ppf(1 - alpha / 2, n - 1) * se
        return float(low), float(stats.t.sf(mean / se, n - 1))
    if method == "sign_flip":
        if n > MAX_SIGN_FLIP_N:
            raise ValueError(f"sign_flip enumerates 2^n patterns; n={n} > {MAX_SIGN_FLIP_N}")
        subsets = ((np.arange(1, 2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
        sums = np.where(subsets, d, 0.0).sum(axis=1)
        # Flipping the signs of subset S lowers the sum by 2 sum(S): the flipped sum is at least
        # the observed one when sum(S) <= 0 (and for the empty set, the observation itself).
        tolerance = 1e-12 * np.abs(d[np.isfinite(d)]).sum()
        p_greater = (1 + np.count_nonzero(sums <= tolerance)) / 2**n
        k = math.floor(alpha * 2 ** (n - 1))  # subset means cut off in each tail
        low = np.sort(sums / subsets.sum(axis=1))[k - 1] if k else -math.inf
        return float(low), p_greater
    raise ValueError(f"method={method!r} is not known; allowed values: {', '.join(METHOD_NAMES)}")


def interval(
    d_low: np.ndarray, d_high: np.ndarray, method: Method, confidence: float
) -> tuple[float, float, float]:
    """(low, high, two-sided p) from differences that bound the true ones from below / above."""
    alpha = 1 - confidence
    low, p_greater = lower_limit(d_low, method, alpha)
    minus_high, p_less = lower_limit(-d_high, method, alpha)
    p = math.nan if math.isnan(p_greater + p_less) else min(1.0, 2 * min(p_greater, p_less))
    return low, -minus_high, p


def why_unbounded(d: np.ndarray, method: Method, confidence: float) -> str:
    """Why an interval from these differences is unbounded or undefined ('' when it is not)."""
    n = d.size
    if n == 1:
        return "one seed: no spread to estimate"
    if method == "t" and np.all(np.isfinite(d)) and d.std() == 0:
        return "identical on every seed: the t-interval is undefined"
    if method == "sign_flip" and math.floor((1 - confidence) * 2 ** (n - 1)) == 0:
        needed = 1 + math.ceil(math.log2(1 / (1 - confidence)))
        return f"exact sign-flip needs n >= {needed} for a finite {confidence:.0%} interval"
    return ""
