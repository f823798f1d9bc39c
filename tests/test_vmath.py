"""The vectorisable exp/tanh/sigmoid of generated network loops: accuracy in ulps against the C library
(via NumPy), special values, and that a loop over them really compiles to SIMD code."""
import math
import platform
import re

import numpy as np
import pytest
from numba import njit

from symode._numeric.vmath import vexp, vsigmoid, vtanh


@njit(error_model="numpy")
def _map_exp(x, out):
    for i in range(x.size):
        out[i] = vexp(x[i])


@njit(error_model="numpy")
def _map_tanh(x, out):
    for i in range(x.size):
        out[i] = vtanh(x[i])


@njit(error_model="numpy")
def _map_sigmoid(x, out):
    for i in range(x.size):
        out[i] = vsigmoid(x[i])


def _apply(fn, x):
    out = np.empty_like(x)
    fn(x, out)
    return out


def _sample(scales, n=20000, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.0, s, n) for s in scales])


def _ulps(got, ref):
    """Error in units in the last place of the reference (subnormal references: of the smallest normal's ulp)."""
    ulp = np.spacing(np.maximum(np.abs(ref), np.finfo(float).tiny))
    return np.abs(got - ref) / ulp


SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, 5e-324, -5e-324, 1e-310, 1e308, -1e308])


def test_exp_within_one_ulp():
    # the whole range, results from subnormal (x < -708.4) to the largest double, and the limits around them
    x = np.concatenate([np.linspace(-745.1, 709.78, 200001), _sample((1e-12, 1e-3, 0.3, 1, 10, 100)),
                        [709.782712893384, 709.79, -745.13, -745.2, -744.44, -708.39, -708.4]])
    got = _apply(_map_exp, x)
    with np.errstate(over="ignore"):
        ref = np.exp(x)
    big = np.isinf(ref)
    assert big.sum() == 1 and np.isinf(got[big]).all()      # 709.79 overflows; 709.7827... does not
    normal = (ref >= np.finfo(float).tiny) & ~big
    # 1 ulp: range reduction with fdlibm's two-part ln 2, Taylor series to r^13/13! (truncation < 5e-18)
    assert _ulps(got[normal], ref[normal]).max() <= 1.0
    # subnormal results lose precision with their exponent (for every exp): within 1 unit of the least subnormal
    sub = ~normal & ~big
    assert np.abs(got[sub] - ref[sub]).max() <= 5e-324
    assert np.array_equal(_apply(_map_exp, np.array([np.inf, -np.inf, 710.0, -746.0])), [np.inf, 0.0, np.inf, 0.0])
    assert np.isnan(_apply(_map_exp, np.array([np.nan]))[0])


def test_tanh_within_two_ulp_and_exact_limits():
    x = np.concatenate([np.linspace(-25, 25, 400001), _sample((1e-300, 1e-8, 1e-3, 0.1, 0.5, 1, 3, 30)),
                        [0.625, -0.625, np.nextafter(0.625, 0), 19.06, 20.0, 21.0, 700.0], SPECIAL])
    got = _apply(_map_tanh, x)
    ref = np.tanh(x)
    # 2 ulp: Cephes' rational form below |x| = 0.625 (2.5e-16 relative), 1 - 2/(exp(2|x|) + 1) above, where the
    # exp's 1 ulp and the division's rounding add up
    assert _ulps(got, ref).max() <= 2.0
    assert np.array_equal(np.signbit(got), np.signbit(ref))          # odd, including tanh(-0.0) = -0.0
    assert np.array_equal(_apply(_map_tanh, np.array([np.inf, -np.inf, 25.0])), [1.0, -1.0, 1.0])
    assert np.isnan(_apply(_map_tanh, np.array([np.nan]))[0])


def test_sigmoid_within_two_ulp():
    x = np.concatenate([np.linspace(-740, 740, 300001), _sample((1e-10, 0.1, 1, 10, 100)), SPECIAL])
    got = _apply(_map_sigmoid, x)
    # reference in extended precision where the platform has it (x86: 80-bit long double), then rounded
    xl = x.astype(np.longdouble)
    with np.errstate(over="ignore"):
        ref = (1 / (1 + np.exp(-xl))).astype(np.float64)
    ok = np.isfinite(x)
    tol = 2.0 if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps else 3.0
    assert _ulps(got[ok], ref[ok]).max() <= tol
    assert np.array_equal(_apply(_map_sigmoid, np.array([np.inf, -np.inf, 0.0])), [1.0, 0.0, 0.5])
    assert np.isnan(_apply(_map_sigmoid, np.array([np.nan]))[0])


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="checks x86 instructions")
def test_activation_loop_is_vectorised():
    """The point of these functions: a loop over them compiles to packed (SIMD) arithmetic, where one over
    math.tanh is a loop of C library calls."""
    x = np.linspace(-3, 3, 64)
    _map_tanh(x, np.empty_like(x))
    asm = _map_tanh.inspect_asm(_map_tanh.signatures[0])
    packed = re.findall(r"\b(v?mulpd|vfn?m(?:add|sub)\d+pd)\b", asm)
    assert packed, "no packed double arithmetic in the tanh loop"
    assert not re.search(r"call\w*\s+\S*tanh", asm)


def test_agrees_with_math_on_scalars():
    # one scalar call (no loop): the same code path as the vector body, lane by lane
    for v in (-3.7, -0.2, 0.0, 1e-5, 0.7, 12.0):
        assert abs(vtanh(v) - math.tanh(v)) <= 2 * np.spacing(abs(math.tanh(v)) or 1e-300)
        assert abs(vexp(v) - math.exp(v)) <= np.spacing(math.exp(v))
