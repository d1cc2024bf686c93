"""Effects with 95% intervals, and the three verdicts a judge gives a claim.

The arms of an ablation share seeds and data order, so arms are compared per seed: the effect is
computed on each seed's pair of runs, then summarised over seeds by one of two methods, both valid
at small n (`intervals`: Student's t on the paired differences, or the exact sign-flip test).

Ratios ("ReLU reaches the target 6x faster") are paired differences of logs; the estimate is the
geometric mean ratio. A run that did not reach its target within the budget is censored: its
steps-to-target is only known to be >= the budget. Each confidence limit is computed with the
censored values placed where they make that limit conservative: for the lower limit a censored
numerator counts as the budget and a censored denominator as infinity, for the upper limit the
reverse. The true log ratios are >= (<=) those values. Only a method whose limits are monotone in
every value keeps that guarantee: the sign-flip limits are order statistics of subset means, each
non-decreasing in every value, but a t-limit is not (capping a value can shrink the spread and raise
the lower limit). So an effect with censored runs is judged by the exact sign-flip test, whatever
method was asked for; below 6 seeds its 95% interval is unbounded and the verdict inconclusive
(`tests/test_coverage.py` checks the coverage under censoring by simulation). The same holds where
every seed gives the same difference (zero spread): the t-interval is undefined there, the sign-flip
interval is not.

Test errors are measured on one fixed test set, the same for every seed and arm. The estimand of
`error_difference` is the difference of the arms' expected errors on this test set (the expectation
over seeds: initialisation and data order), not on the population the test set was drawn from: the
paired differences over seeds carry all of that estimand's variance, so the interval is the paired
t-interval, and more seeds narrow it without limit. Generalising to new test examples would add the
test-set sampling term (per-example paired correctness would be needed to estimate it); the rule
text of each part that compares test errors says so.

Where one part makes several comparisons, `holm` adjusts their p-values (Holm 1979), for
refutations as well as reproductions: a claim is reproduced only if its interval excludes no effect
and its adjusted p is below 1 - confidence; refuted by the opposite effect only if that adjusted p
is below it too, and refuted by a margin (the smallest effect the claim asserts) only if the
interval excludes the margin and the Holm-adjusted p of "effect = margin" (`Effect.p_margin`) is
below it. Otherwise the outcome is inconclusive.
"""

import dataclasses
import enum
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from scipy import stats

from dlresearch.ablation import intervals
from dlresearch.ablation.intervals import Method

Claim = Literal["greater", "less"]


@dataclasses.dataclass(frozen=True)
class Effect:
    """An estimated effect with its confidence interval, as a report states it.

    `unit` "x" marks a ratio (no effect = 1); "%" and "pp" mark fractions shown in percent and
    percentage points; any other unit is a suffix of a difference (no effect = 0). `low` and `high`
    may be infinite (a one-sided bound) or nan (undefined); `note` says why.
    """

    name: str
    estimate: float
    low: float
    high: float
    p: float  # two-sided p-value of "no effect"; nan where the method gives none
    n: int  # seeds, or test examples for a single error rate
    method: str
    unit: str = ""
    confidence: float = 0.95
    censored: int = 0  # runs that did not reach their target within the budget
    estimate_bound: str = ""  # ">=" or "<=" when censored runs make the estimate a bound
    note: str = ""
    # Two-sided p of "effect = margin" where a margin was given (`paired_ratio(margin=...)`).
    p_margin: float = math.nan

    @property
    def null(self) -> float:
        """The value of no effect."""
        return 1.0 if self.unit == "x" else 0.0

    def value(self, x: float) -> str:
        """`x` in this effect's unit: '12.2x', '1.23%', '-0.4 pp', '320 steps'."""
        if self.unit == "x":
            return f"{_significant(x)}x"
        if self.unit == "%":
            return f"{_significant(100 * x)}%"
        if self.unit == "pp":
            return f"{_significant(100 * x)} pp"
        return f"{_significant(x)} {self.unit}".rstrip()

    def interval(self) -> str:
        """The interval as text: 'a to b', a one-sided bound, 'unbounded' or 'undefined'."""
        low, high = self.low, self.high
        if math.isnan(low) or math.isnan(high):
            return "undefined"
        # A ratio's unbounded lower limit is exp(-inf) = 0.
        has_low = math.isfinite(low) and not (self.unit == "x" and low == 0)
        if has_low and math.isfinite(high):
            return f"{self.value(low)} to {self.value(high)}"
        if has_low:
            return f">= {self.value(low)}"
        if math.isfinite(high):
            return f"<= {self.value(high)}"
        return "unbounded"

    def describe(self) -> str:
        """E.g. 'ReLU/tanh steps ratio 12.2x (95% CI 9.1x to 16.3x, paired t on log ratios, n=5,
        p<0.001)'."""
        details = [f"{self.confidence:.0%} CI {self.interval()}", self.method, f"n={self.n}"]
        if not math.isnan(self.p):
            details.append(_p_text(self.p))
        if self.note:
            details.append(self.note)
        if math.isnan(self.estimate):
            estimate = "undefined"
        else:
            bound = f"{self.estimate_bound} " if self.estimate_bound else ""
            estimate = bound + self.value(self.estimate)
        return f"{self.name} {estimate} ({', '.join(details)})"


def _significant(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _check_paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or not a.size:
        raise ValueError(
            f"paired arms need two equal-length 1-D sequences, got {a.shape} and {b.shape}"
        )
    return a, b


def _join(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


def _judged_by(method: Method, d: np.ndarray, censored: bool) -> Method:
    """The method an interval is computed with: `method`, except the exact sign-flip test where
    censored runs or zero spread leave the t-interval without its guarantee (module docstring)."""
    if method == "t" and d.size > 1 and (censored or np.all(d == d[0])):
        return "sign_flip"
    return method


def _limits(
    d_low: np.ndarray,
    d_high: np.ndarray,
    method: Method,
    confidence: float,
    null: float,
) -> tuple[float, float, float, float]:
    """(low, high, p of no effect, p of `null`) of paired (log) differences bounded by
    d_low <= d <= d_high; `null` nan: no margin."""
    low, high, p = intervals.interval(d_low, d_high, method, confidence)
    p_null = (
        math.nan
        if math.isnan(null)
        else intervals.interval(d_low - null, d_high - null, method, confidence)[2]
    )
    return low, high, p, p_null


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    name: str,
    method: Method = "t",
    unit: str = "",
    confidence: float = 0.95,
    margin: float | None = None,
) -> Effect:
    """The mean of a_i - b_i over seeds i (a_i and b_i from the same seed), with its interval (and
    the p of "effect = margin" where a margin is given)."""
    a, b = _check_paired(a, b)
    d = a - b
    used = _judged_by(method, d, censored=False)
    null = math.nan if margin is None else float(margin)
    low, high, p, p_margin = _limits(d, d, used, confidence, null)
    return Effect(
        name,
        float(d.mean()),
        low,
        high,
        p,
        n=d.size,
        method=_method_text(method, used, "zero spread"),
        unit=unit,
        confidence=confidence,
        note=intervals.why_unbounded(d, used, confidence),
        p_margin=p_margin,
    )


def _method_text(asked: Method, used: Method, why: str) -> str:
    text = intervals.METHOD_NAMES[used]
    return text if used == asked else f"{text} ({why})"


def paired_ratio(
    numerator: Sequence[float],
    denominator: Sequence[float],
    *,
    name: str,
    budget: float | None = None,
    method: Method = "t",
    confidence: float = 0.95,
    margin: float | None = None,
) -> Effect:
    """The geometric mean over seeds of numerator_i / denominator_i, with its interval (and the p
    of "ratio = margin" where a margin is given).

    For steps-to-target ratios: `math.inf` marks a run that did not reach the target within
    `budget` steps (censored, see the module docstring); `budget` is required when any is. An
    effect with censored runs, or with the same ratio on every seed, is judged by the exact
    sign-flip test.
    """
    num, den = _check_paired(numerator, denominator)
    if np.any(num <= 0) or np.any(den <= 0):
        raise ValueError("ratios need positive values (math.inf for a censored run)")
    num_censored, den_censored = np.isinf(num), np.isinf(den)
    censored = int(num_censored.sum() + den_censored.sum())
    if censored and budget is None:
        raise ValueError("censored values (math.inf) need the budget they were censored at")
    limit = math.inf if budget is None else float(budget)
    at_budget = lambda x, is_censored: np.where(is_censored, limit, x)
    # log(inf) = inf: a censored value at infinity leaves its side of the interval unbounded.
    d_low = np.log(at_budget(num, num_censored)) - np.log(den)
    d_high = np.log(num) - np.log(at_budget(den, den_censored))
    d_imputed = np.log(at_budget(num, num_censored)) - np.log(at_budget(den, den_censored))
    used = _judged_by(method, d_imputed, censored=bool(censored))
    null = math.nan if margin is None else math.log(margin)
    low, high, p, p_margin = _limits(d_low, d_high, used, confidence, null)
    estimate, bound = math.exp(d_imputed.mean()), ""
    if num_censored.any() and den_censored.any():
        estimate = math.nan
    elif num_censored.any():
        bound = ">="
    elif den_censored.any():
        bound = "<="
    censored_note = (
        f"{censored} of {_runs(2 * num.size)} did not reach the target within "
        f"{_significant(budget)} steps"
        if censored
        else ""
    )
    return Effect(
        name,
        estimate,
        math.exp(low),
        math.exp(high),
        p,
        n=num.size,
        method=_method_text(method, used, "censored runs" if censored else "zero spread")
        + " on log ratios",
        unit="x",
        confidence=confidence,
        censored=censored,
        estimate_bound=bound,
        note=_join(intervals.why_unbounded(d_imputed, used, confidence), censored_note),
        p_margin=p_margin,
    )


def error_rate(
    errors: int,
    n: int,
    *,
    name: str,
    method: Literal["wilson", "clopper_pearson"] = "wilson",
    confidence: float = 0.95,
) -> Effect:
    """A test error rate `errors / n` with its binomial interval (Wilson score or the exact
    Clopper-Pearson interval)."""
    if not 0 <= errors <= n or n < 1:
        raise ValueError(f"need 0 <= errors <= n and n >= 1, got errors={errors}, n={n}")
    alpha = 1 - confidence
    if method == "wilson":
        z = stats.norm.ppf(1 - alpha / 2)
        centre = (errors + z**2 / 2) / (n + z**2)
        half = z / (n + z**2) * math.sqrt(errors * (n - errors) / n + z**2 / 4)
        low, high, label = max(0.0, centre - half), min(1.0, centre + half), "Wilson score"
    elif method == "clopper_pearson":
        low = stats.beta.ppf(alpha / 2, errors, n - errors + 1) if errors else 0.0
        high = stats.beta.ppf(1 - alpha / 2, errors + 1, n - errors) if errors < n else 1.0
        label = "Clopper-Pearson"
    else:
        raise ValueError(f"method={method!r} is not known; allowed values: clopper_pearson, wilson")
    return Effect(
        name, errors / n, float(low), float(high), math.nan, n, label, "%", confidence=confidence
    )


def error_difference(
    errors_a: Sequence[float],
    errors_b: Sequence[float],
    n_test: int,
    *,
    name: str,
    confidence: float = 0.95,
    margin: float | None = None,
) -> Effect:
    """The mean over seeds of test error rate a_i - b_i (fractions, both arms on the same fixed
    `n_test` examples), with its paired interval over seeds (and the p of "effect = margin" where
    a margin is given). The estimand is the difference on this test set (module docstring), whose
    only variance is the seeds'."""
    effect = paired_difference(
        errors_a, errors_b, name=name, unit="pp", confidence=confidence, margin=margin
    )
    return dataclasses.replace(
        effect, method=f"{effect.method} over seeds, on the fixed {n_test:,}-example test set"
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (nan counts as 1)."""
    p = np.nan_to_num(np.asarray(p_values, dtype=float), nan=1.0)
    order = np.argsort(p)
    m = p.size
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted.tolist()


class Outcome(enum.StrEnum):
    REPRODUCED = "reproduced"
    NOT_REPRODUCED = "not reproduced"
    INCONCLUSIVE = "inconclusive"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A judge's outcome, why, and the effects it rests on (at least one, with intervals)."""

    outcome: Outcome
    reason: str
    effects: tuple[Effect, ...]

    def __post_init__(self) -> None:
        if not self.effects:
            raise ValueError("a verdict states at least one effect with its interval")

    def result_line(self, kind: str) -> str:
        """The report's `**Result` line: the claim's kind, the outcome, every effect with its
        interval, why."""
        effects = "; ".join(effect.describe() for effect in self.effects)
        return f"**Result ({kind}): {self.outcome}** — {effects}. {self.reason}"


def verdict(
    effect: Effect,
    *,
    claim: Claim,
    margin: float | None = None,
    p_adjusted: float | None = None,
    p_margin_adjusted: float | None = None,
) -> Verdict:
    """Judges `effect` against a claim that it is `claim` ("greater" or "less") than no effect.

    `margin` is the smallest effect the claim asserts (e.g. 2.0 for "at least 2x faster"), in the
    effect's unit; `p_adjusted` and `p_margin_adjusted` are the Holm p-values of "no effect" and
    of "effect = margin" (`Effect.p_margin`) where a part makes several comparisons.

    - not reproduced: the interval excludes the margin (the effect is smaller than claimed, even if
      real) and `p_margin_adjusted` is below 1 - confidence, or the effect is significant in the
      other direction (`p_adjusted` below it); without a margin a claim can only be refuted by the
      opposite effect;
    - reproduced: the interval excludes no effect on the claimed side (and `p_adjusted` is below
      1 - confidence);
    - inconclusive otherwise; the reason says whether more seeds or a longer budget is needed.

    Where censored runs make the estimate a bound, a verdict stands only if no longer budget can
    give the opposite one (`_open_to_a_longer_budget`); otherwise the budget decides, and the
    answer is inconclusive.
    """
    oriented = _orientation(effect, claim)
    if margin is not None and oriented(margin) <= 0:
        raise ValueError(f"margin={margin!r} is not on the claimed ({claim}) side of no effect")
    decided = _interval_verdict(effect, oriented, margin, p_adjusted, p_margin_adjusted)
    why = _open_to_a_longer_budget(effect, decided.outcome, claim, margin)
    if not why:
        return decided
    return Verdict(
        Outcome.INCONCLUSIVE, f"{decided.reason} But {why}; needs a longer budget.", (effect,)
    )


def _orientation(effect: Effect, claim: Claim) -> Callable[[float], float]:
    """The claim-oriented scale of `effect`: no effect at 0, the claimed side positive, ratios
    on logs."""
    sign = 1 if claim == "greater" else -1

    def oriented(x: float) -> float:
        with np.errstate(divide="ignore"):
            return sign * float(np.log(x) if effect.unit == "x" else x)

    return oriented


def _interval_verdict(
    effect: Effect,
    oriented: Callable[[float], float],
    margin: float | None,
    p_adjusted: float | None,
    p_margin_adjusted: float | None,
) -> Verdict:
    """The verdict from the interval as it stands (see `verdict`)."""
    alpha = 1 - effect.confidence
    low, high = sorted((oriented(effect.low), oriented(effect.high)))
    significant = p_adjusted is None or p_adjusted <= alpha
    holm_text = "" if p_adjusted is None else f" (Holm-adjusted {_p_text(p_adjusted)})"
    below_margin = margin is not None and high < oriented(margin)
    if below_margin and (p_margin_adjusted is None or p_margin_adjusted <= alpha):
        excluded = f"excludes the claimed effect of {effect.value(margin)} or more"
        if p_margin_adjusted is not None:
            excluded += f" (Holm-adjusted {_p_text(p_margin_adjusted)})"
        if low > 0 and significant:
            reason = f"The effect is real but smaller than claimed: its interval {excluded}."
        else:
            reason = f"The interval {excluded}."
        return Verdict(Outcome.NOT_REPRODUCED, reason, (effect,))
    if high < 0 and significant:
        return Verdict(
            Outcome.NOT_REPRODUCED,
            f"The effect is significant in the other direction{holm_text}.",
            (effect,),
        )
    if low > 0 and significant:
        return Verdict(
            Outcome.REPRODUCED,
            f"The interval excludes no effect ({effect.value(effect.null)}) on the claimed side"
            f"{holm_text}.",
            (effect,),
        )
    needs = [_seeds_needed(effect, oriented, margin)]
    if effect.censored:
        needs.insert(0, f"a longer budget ({_runs(effect.censored)} did not reach the target)")
    if math.isnan(low + high):
        reason = "The interval is undefined"
    elif high < 0 or below_margin:
        reason = "The interval lies on the far side, but not at the Holm-adjusted level"
    else:
        reason = "The interval includes no effect"
        reason += " and the claimed effect" if margin is not None else ""
    reason += f"{holm_text}; needs {' or '.join(needs)}."
    if margin is None:
        reason += " No smallest claimed effect is stated, so the data cannot refute the claim."
    return Verdict(Outcome.INCONCLUSIVE, reason, (effect,))


def _open_to_a_longer_budget(
    effect: Effect, outcome: Outcome, claim: Claim, margin: float | None
) -> str:
    """Why a longer budget could give the opposite of `outcome` ('' if none can).

    Censored runs make the estimate a bound (">=" where numerators were cut off, "<=" where
    denominators were) that a longer budget moves one way only. The limits of a t-interval lie
    on either side of its estimate at every budget but are not monotone in the values they
    bound, so a limit alone does not settle it (e.g. an upper limit below the margin can rise
    above it when a cut-off denominator turns out larger, widening the interval). Reproduced
    stands if a bound toward the claim reaches the margin (then so does every longer budget's
    estimate, and its upper limit); not reproduced stands if a bound away from the claim is at
    most no effect (then so is every longer budget's estimate, and its lower limit). Without a
    margin both hold whenever the interval decides.
    """
    if not effect.estimate_bound or outcome == Outcome.INCONCLUSIVE:
        return ""
    oriented = _orientation(effect, claim)
    estimate = oriented(effect.estimate)
    toward_claim = (effect.estimate_bound == ">=") == (claim == "greater")
    kind = "a lower" if effect.estimate_bound == ">=" else "an upper"
    cut_off = (
        f"{_runs(effect.censored)} did not reach the target: the estimate is only {kind} bound"
    )
    if (
        outcome == Outcome.REPRODUCED
        and toward_claim
        and margin is not None
        and estimate < oriented(margin)
    ):
        return (
            f"{cut_off}, short of the claimed {effect.value(margin)}, and a longer budget could "
            "still exclude the claimed effect"
        )
    if outcome == Outcome.NOT_REPRODUCED and not toward_claim and estimate > 0:
        return (
            f"{cut_off}, beyond no effect on the claimed side, and a longer budget could still "
            "show the claimed effect"
        )
    return ""


def _seeds_needed(effect: Effect, oriented: Callable[[float], float], margin: float | None) -> str:
    """About how many seeds would decide, from the current interval and estimate.

    The interval's variance is the seeds' alone (test errors: the fixed test set is the estimand,
    module docstring), so its half-width shrinks about as 1 / sqrt(n); below 6 seeds the exact
    sign-flip interval (censored runs, zero spread) is unbounded whatever the data.
    """
    low, high = sorted((oriented(effect.low), oriented(effect.high)))
    estimate = oriented(effect.estimate)
    if effect.method.startswith(intervals.METHOD_NAMES["sign_flip"]) and effect.n < 6:
        return f"at least 6 seeds for the exact sign-flip test (now {effect.n})"
    if not (math.isfinite(low) and math.isfinite(high) and math.isfinite(estimate)):
        return f"more seeds (now {effect.n})"
    # It decides once its half-width is below the distance from the estimate to no effect or to
    # the margin, whichever is larger.
    distance = abs(estimate)
    if margin is not None:
        distance = max(distance, abs(estimate - oriented(margin)))
    if distance == 0:
        return f"more seeds (now {effect.n})"
    seeds = math.ceil(effect.n * ((high - low) / 2 / distance) ** 2)
    return f"about {max(effect.n + 1, seeds)} seeds at the current spread (now {effect.n})"


def joint_outcome(outcomes: Sequence[Outcome]) -> Outcome:
    """The outcome of a claim made of several conditions (or an experiment of several parts):
    not reproduced if any is, reproduced if all are, inconclusive otherwise."""
    if Outcome.NOT_REPRODUCED in outcomes:
        return Outcome.NOT_REPRODUCED
    if set(outcomes) == {Outcome.REPRODUCED}:
        return Outcome.REPRODUCED
    return Outcome.INCONCLUSIVE


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict from several conditions of a claim (`joint_outcome`); the reason lists each
    condition's."""
    outcome = joint_outcome([v.outcome for v in verdicts])
    reason = " ".join(f"{v.effects[0].name}: {v.outcome}. {v.reason}" for v in verdicts)
    return Verdict(outcome, reason, tuple(e for v in verdicts for e in v.effects))


def holm_verdicts(
    effects: Sequence[Effect], *, claim: Claim, margin: float | None = None
) -> list[Verdict]:
    """`verdict` of each of a part's comparisons, at the Holm-adjusted p-values over them: of no
    effect (reproductions and refutations by the opposite effect) and, with a margin, of "effect
    = margin" (refutations by the margin; the effects must have been computed with it)."""
    adjusted = holm([e.p for e in effects])
    by_margin = holm([e.p_margin for e in effects]) if margin is not None else [None] * len(effects)
    return [
        verdict(e, claim=claim, margin=margin, p_adjusted=p, p_margin_adjusted=pm)
        for e, p, pm in zip(effects, adjusted, by_margin, strict=True)
    ]
