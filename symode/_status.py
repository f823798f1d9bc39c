"""Integer status codes shared by the compiled kernels and the Python API.

This module imports nothing from symode so that kernels and the API agree on the codes.
"""

SUCCESS = 0
MAX_STEPS = 1
DT_MIN = 2
NONFINITE = 3
SINGULAR_MATRIX = 4
MAX_REJECTS = 5
TIME_LIMIT = 6
ADJOINT_FAILED = 7
CAPACITY = 8
INTERRUPTED = 9

NAMES = {
    SUCCESS: "SUCCESS",
    MAX_STEPS: "MAX_STEPS",
    DT_MIN: "DT_MIN",
    NONFINITE: "NONFINITE",
    SINGULAR_MATRIX: "SINGULAR_MATRIX",
    MAX_REJECTS: "MAX_REJECTS",
    TIME_LIMIT: "TIME_LIMIT",
    ADJOINT_FAILED: "ADJOINT_FAILED",
    CAPACITY: "CAPACITY",
    INTERRUPTED: "INTERRUPTED",
}

MESSAGES = {
    SUCCESS: "The integration succeeded.",
    MAX_STEPS: "The maximum number of steps ({max_steps}) was reached at t={t}. "
    "Try increasing `max_steps`, or a stiff method (`method='rodas5'` or `'auto'`) if the problem is stiff.",
    DT_MIN: "The step size fell below the smallest representable step at t={t}. "
    "The solution may blow up there, or the problem is too stiff for this method; try `method='rodas5'`.",
    NONFINITE: "The right-hand side or the state became non-finite (NaN or inf) at t={t} and shrinking the step "
    "did not help. Check the model's domain (log, sqrt, division) near that time.",
    SINGULAR_MATRIX: "The Rosenbrock matrix W = I - h*gamma*J was singular at t={t} and shrinking the step did "
    "not help.",
    MAX_REJECTS: "Too many consecutive rejected steps at t={t}.",
    TIME_LIMIT: "The wall-clock limit was reached at t={t}. Try increasing `time_limit`.",
    ADJOINT_FAILED: "The backward (adjoint) integration failed at t={t}.",
    CAPACITY: "An internal buffer limit was reached at t={t}.",
    INTERRUPTED: "The integration was interrupted (SIGINT, Ctrl-C) at t={t}.",
}


def message(status, t=float("nan"), max_steps=None):
    """Return the human-readable message for `status`, filled with the time reached."""
    return MESSAGES.get(status, "Unknown status {status}.").format(t=t, max_steps=max_steps, status=status)
