"""The continuous adjoint of a stiff problem as a system the Rosenbrock loop can integrate (library code).

The adjoint a' = -(df/dz)^T a, g' = -(df/dtheta)^T a inherits the stiffness of the forward problem, so it is
integrated backward with the same Rosenbrock method. Its right-hand side and exact Jacobian are two library
``cfunc``s with the model-kernel signature; everything they need (the model's parameters and kernel addresses,
the recorded forward steps and the dense-output coefficients) travels packed in the ``theta`` argument:

    ctx = [n, p, nseg, s, deg, addr_vjp, addr_jac_z, addr_jac_theta, theta (p), seg_t (nseg), seg_h (nseg),
           seg_y (nseg*n), seg_k (nseg*s*n), dense (s*deg)]

z(t) comes from the forward pass's continuous extension (never re-integrated). The time derivative needed by
the Rosenbrock stages of this non-autonomous system is taken by central differences of the right-hand side.
"""
import numpy as np
from numba import carray, cfunc, njit

from .fnptr import call_j, call_v
from .rk import interp_forward
from .signatures import F_SIG, J_SIG

_OPTS = dict(cache=True, error_model="numpy")
HEAD = 8


def pack(theta, kern, seg_t, seg_h, seg_y, seg_k, dense):
    """Build the context array passed as `theta` to the adjoint kernels."""
    n = seg_y.shape[1]
    s, deg = dense.shape
    head = np.array([n, theta.size, seg_t.size, s, deg, float(kern[4]), float(kern[1]), float(kern[2])])
    return np.ascontiguousarray(np.concatenate([head, theta, seg_t, seg_h, seg_y.ravel(), seg_k.ravel(),
                                                dense.ravel()]))


@njit(**_OPTS)
def _context(ctx_p):
    """The packed context behind the pointer, and the size n + p of the adjoint state."""
    head = carray(ctx_p, (HEAD,))
    n = int(head[0])
    p = int(head[1])
    nseg = int(head[2])
    s = int(head[3])
    deg = int(head[4])
    size = HEAD + p + 2 * nseg + nseg * n + nseg * s * n + s * deg
    return carray(ctx_p, (size,)), n + p


@njit(**_OPTS)
def _unpack(ctx):
    """Views of the packed context: (n, p, theta, seg_t, seg_h, seg_y, seg_k, dense)."""
    n = int(ctx[0])
    p = int(ctx[1])
    nseg = int(ctx[2])
    s = int(ctx[3])
    deg = int(ctx[4])
    o = HEAD
    theta = ctx[o:o + p]
    o += p
    seg_t = ctx[o:o + nseg]
    o += nseg
    seg_h = ctx[o:o + nseg]
    o += nseg
    seg_y = ctx[o:o + nseg * n].reshape((nseg, n))
    o += nseg * n
    seg_k = ctx[o:o + nseg * s * n].reshape((nseg, s, n))
    o += nseg * s * n
    dense = ctx[o:o + s * deg].reshape((s, deg))
    return n, p, theta, seg_t, seg_h, seg_y, seg_k, dense


@njit(**_OPTS)
def _z_at(t, seg_t, seg_h, seg_y, seg_k, dense, n):
    z = np.empty(n)
    wa = np.empty(n)
    interp_forward(t, seg_t, seg_h, seg_y, seg_k, dense, z, wa)
    return z


@njit(**_OPTS)
def _rhs(t, y, ctx, out):
    n, p, theta, seg_t, seg_h, seg_y, seg_k, dense = _unpack(ctx)
    z = _z_at(t, seg_t, seg_h, seg_y, seg_k, dense, n)
    a = y[:n].copy()
    oz = np.empty(n)
    op = np.empty(max(p, 1))
    call_v(np.int64(ctx[5]), t, z, theta, a, oz, op)
    for i in range(n):
        out[i] = -oz[i]
    for k in range(p):
        out[n + k] = -op[k]


@cfunc(F_SIG, **_OPTS)
def adjoint_rhs(t, y_p, ctx_p, out_p):
    """The adjoint right-hand side: out = [-(df/dz)^T a, -(df/dtheta)^T a] at z(t) from the forward pass."""
    ctx, ny = _context(ctx_p)
    y = carray(y_p, (ny,))
    out = carray(out_p, (ny,))
    _rhs(t, y, ctx, out)


@cfunc(F_SIG, **_OPTS)
def adjoint_rhs_t(t, y_p, ctx_p, out_p):
    """d/dt of the adjoint right-hand side by central differences (z(t) varies with t)."""
    ctx, ny = _context(ctx_p)
    y = carray(y_p, (ny,))
    out = carray(out_p, (ny,))
    d = 1e-6 * max(1.0, abs(t))
    fp = np.empty(ny)
    fm = np.empty(ny)
    _rhs(t + d, y, ctx, fp)
    _rhs(t - d, y, ctx, fm)
    for i in range(ny):
        out[i] = (fp[i] - fm[i]) / (2.0 * d)


@cfunc(J_SIG, **_OPTS)
def adjoint_jac(t, y_p, ctx_p, out_p):
    """Exact Jacobian of the adjoint system: d(a')/da = -J^T, d(g')/da = -Jp^T, zero columns for g."""
    ctx, ny = _context(ctx_p)
    out = carray(out_p, (ny, ny))
    n, p, theta, seg_t, seg_h, seg_y, seg_k, dense = _unpack(ctx)
    z = _z_at(t, seg_t, seg_h, seg_y, seg_k, dense, n)
    jz = np.int64(ctx[6])
    jp = np.int64(ctx[7])
    J = np.zeros((n, n))
    Jp = np.zeros((n, max(p, 1)))
    call_j(jz, t, z, theta, J)
    if p > 0:
        call_j(jp, t, z, theta, Jp)
    for i in range(ny):
        for j in range(ny):
            out[i, j] = 0.0
    for i in range(n):
        for j in range(n):
            out[i, j] = -J[j, i]
    for k in range(p):
        for j in range(n):
            out[n + k, j] = -Jp[j, k]
