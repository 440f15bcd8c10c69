"""Tests for lumen.workload.synthetic: arrival processes, length distributions, synthesize_trace."""

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumen.workload.synthetic import (
    ConstantLength,
    EmpiricalLength,
    LengthDistribution,
    LogNormalLength,
    UniformLength,
    gamma_arrivals,
    poisson_arrivals,
    synthesize_trace,
)
from lumen.workload.traces import BUNDLED_TRACES, load_azure_csv


def gap_cv(arrival: npt.NDArray[np.float64]) -> float:
    gaps = np.diff(arrival)
    return float(gaps.std() / gaps.mean())


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------
# Arrival processes
# --------------------------------------------------------------------------------------------


def test_poisson_rate_and_cv_for_large_n() -> None:
    # 200k gaps: the relative standard error of the mean gap is ~0.2%, so 1% is ~4.5 sigma.
    arrival = poisson_arrivals(200_000, 8.0, rng(1))
    assert arrival[0] == 0.0
    assert (len(arrival) - 1) / arrival[-1] == pytest.approx(8.0, rel=0.01)
    assert gap_cv(arrival) == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("cv", [0.25, 1.0, 2.0, 4.0])
def test_gamma_rate_and_cv_for_large_n(cv: float) -> None:
    arrival = gamma_arrivals(200_000, 3.0, cv, rng(2))
    assert (len(arrival) - 1) / arrival[-1] == pytest.approx(3.0, rel=0.03)
    # cv=4 (shape 1/16) has a heavy tail; the std estimate still lands within ~1.5%.
    assert gap_cv(arrival) == pytest.approx(cv, rel=0.05)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 500),
    rate=st.floats(1e-3, 1e4),
    cv=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_arrival_shape(n: int, rate: float, cv: float, seed: int) -> None:
    for arrival in (poisson_arrivals(n, rate, rng(seed)), gamma_arrivals(n, rate, cv, rng(seed))):
        assert arrival.shape == (n,)
        assert arrival.dtype == np.float64
        assert arrival[0] == 0.0
        assert np.all(np.diff(arrival) >= 0)


def test_arrivals_are_deterministic_by_seed() -> None:
    np.testing.assert_array_equal(
        poisson_arrivals(100, 2.0, rng(7)), poisson_arrivals(100, 2.0, rng(7))
    )
    assert not np.array_equal(
        poisson_arrivals(100, 2.0, rng(7)), poisson_arrivals(100, 2.0, rng(8))
    )


@pytest.mark.parametrize(
    ("n", "rate", "cv", "match"),
    [
        (0, 1.0, 1.0, "n must be"),
        (10, 0.0, 1.0, "rate_qps"),
        (10, math.nan, 1.0, "rate_qps"),
        (10, 1.0, 0.0, "cv"),
        (10, 1.0, math.inf, "cv"),
    ],
)
def test_arrival_argument_errors(n: int, rate: float, cv: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gamma_arrivals(n, rate, cv, rng())


# --------------------------------------------------------------------------------------------
# Length distributions
# --------------------------------------------------------------------------------------------


def test_constant_length() -> None:
    assert ConstantLength(7).sample(3, rng()).tolist() == [7, 7, 7]
    assert ConstantLength(7).sample(0, rng()).shape == (0,)


def test_uniform_length_includes_both_ends() -> None:
    values = UniformLength(3, 5).sample(1_000, rng())
    assert values.dtype == np.int64
    assert set(values.tolist()) == {3, 4, 5}


def test_lognormal_mean_and_clipping() -> None:
    dist = LogNormalLength(mean=1_000.0, cv=0.5)
    assert dist.sigma == pytest.approx(math.sqrt(math.log(1.25)))
    values = dist.sample(100_000, rng(3))
    assert values.mean() == pytest.approx(1_000.0, rel=0.01)
    assert values.std() / values.mean() == pytest.approx(0.5, rel=0.05)
    clipped = LogNormalLength(mean=1_000.0, cv=2.0, min_value=100, max_value=2_000).sample(
        10_000, rng(4)
    )
    assert clipped.min() == 100 and clipped.max() == 2_000


def test_empirical_length_resamples_observed_values() -> None:
    source = np.array([5, 5, 5, 100], dtype=np.int64)
    dist = EmpiricalLength(source)
    source[0] = 999  # the distribution holds its own copy
    values = dist.sample(20_000, rng(5))
    assert set(values.tolist()) == {5, 100}
    assert np.mean(values == 5) == pytest.approx(0.75, abs=0.02)
    assert "4 values" in repr(dist)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: ConstantLength(0), "value"),
        (lambda: UniformLength(5, 4), "high"),
        (lambda: UniformLength(0, 4), "low"),
        (lambda: LogNormalLength(mean=-1.0, cv=1.0), "mean"),
        (lambda: LogNormalLength(mean=10.0, cv=1.0, min_value=5, max_value=4), "max_value"),
        (lambda: EmpiricalLength(np.array([], dtype=np.int64)), "non-empty"),
        (lambda: EmpiricalLength(np.array([1.5, 2.0])), "integer"),
        (lambda: EmpiricalLength(np.array([3, 0])), ">= 1"),
    ],
)
def test_length_distribution_validation(factory: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()  # type: ignore[operator]


@settings(max_examples=40, deadline=None)
@given(
    low=st.integers(1, 1_000),
    width=st.integers(0, 1_000),
    mean=st.floats(1.0, 1e5),
    cv=st.floats(0.01, 5.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_lengths_respect_bounds(low: int, width: int, mean: float, cv: float, seed: int) -> None:
    dists: list[LengthDistribution] = [
        ConstantLength(low),
        UniformLength(low, low + width),
        LogNormalLength(mean, cv, min_value=low, max_value=low + width),
    ]
    for dist in dists:
        assert isinstance(dist, LengthDistribution)
        values = dist.sample(50, rng(seed))
        assert values.shape == (50,) and values.dtype == np.int64
        assert values.min() >= low and values.max() <= low + width


# --------------------------------------------------------------------------------------------
# synthesize_trace
# --------------------------------------------------------------------------------------------


def test_synthesize_trace_is_deterministic_by_seed() -> None:
    def make(seed: int) -> tuple[list[float], list[int], list[int]]:
        trace = synthesize_trace(
            200,
            rate_qps=4.0,
            arrivals="gamma",
            cv=2.0,
            prompt=LogNormalLength(800.0, 1.0, max_value=8_192),
            output=UniformLength(1, 300),
            seed=seed,
        )
        return trace.arrival_s.tolist(), trace.prompt_tokens.tolist(), trace.output_tokens.tolist()

    assert make(11) == make(11)
    assert make(11) != make(12)


def test_synthesize_trace_streams_are_independent() -> None:
    # Swapping the output distribution must not move arrivals or prompts.
    a = synthesize_trace(50, rate_qps=1.0, prompt=UniformLength(1, 99), output=ConstantLength(3))
    b = synthesize_trace(50, rate_qps=1.0, prompt=UniformLength(1, 99), output=UniformLength(1, 9))
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.prompt_tokens, b.prompt_tokens)


def test_synthesize_trace_from_real_lengths() -> None:
    azure = load_azure_csv(BUNDLED_TRACES["azure-conv-2023"])
    trace = synthesize_trace(
        20_000,
        rate_qps=10.0,
        prompt=EmpiricalLength(azure.prompt_tokens),
        output=EmpiricalLength(azure.output_tokens),
        seed=1,
    )
    assert len(trace) == 20_000
    assert trace.mean_rate_qps == pytest.approx(10.0, rel=0.03)
    assert set(trace.prompt_tokens.tolist()) <= set(azure.prompt_tokens.tolist())
    assert trace.hash_ids is None
    assert trace.source.startswith("synthetic(poisson, 10 qps, n=20000")


def test_synthesize_trace_argument_errors() -> None:
    kwargs = {"rate_qps": 1.0, "prompt": ConstantLength(1), "output": ConstantLength(1)}
    with pytest.raises(ValueError, match="arrivals='gamma'"):
        synthesize_trace(10, arrivals="poisson", cv=2.0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown arrival process"):
        synthesize_trace(10, arrivals="weibull", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be"):
        synthesize_trace(0, **kwargs)  # type: ignore[arg-type]


def test_synthesize_trace_rejects_bad_custom_distribution() -> None:
    class Floats:
        def sample(self, n: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
            return rng.random(n)  # type: ignore[return-value]

    with pytest.raises(ValueError, match="output distribution"):
        synthesize_trace(5, rate_qps=1.0, prompt=ConstantLength(1), output=Floats())
