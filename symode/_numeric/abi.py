"""The one place for the layout constants shared by the compiled loops and their callers.

Kernel slots: a model's kernels reach the library loops as one int64 array of addresses,
``kern = [f, jac_z, jac_theta, jac_t, vjp, f_rec, vjp_rec, W_REC]`` (``W_REC``: the number of entries of a
network model's per-stage work array, 0 for other models; see ``signatures``). ``K_*`` index it.

Flat buffers: the prepared calls (``batch.solve_flat``, ``batch.vjp_discrete_flat``) write every output into
one float64 buffer; ``solve_flat_size`` and ``flat_size`` give their lengths and ``FLAT_TAIL`` the length of
the float statistics block (``fstats``) inside them.
"""

K_F, K_JZ, K_JP, K_JT, K_VJP, K_FREC, K_VREC, K_WREC = 0, 1, 2, 3, 4, 5, 6, 7
N_KERN = 8   # entries of a full kernel array

FLAT_TAIL = 4   # fstats: [t_reached, h_last or t_stiff, span_explicit, span_rosenbrock]


def solve_flat_size(n, m):
    """Length of ``solve_flat``'s buffer: [ts (m), out_y (m n), fstats (FLAT_TAIL)]."""
    return m + m * n + FLAT_TAIL


def flat_size(n, p, m):
    """Length of ``vjp_discrete_flat``'s buffer: [g_z0 (n), g_theta (p), g_t (m), out_y (m n), cot (m n),
    fstats (FLAT_TAIL), g_loss (max(p, 1))]."""
    return n + p + m + 2 * m * n + FLAT_TAIL + max(p, 1)
