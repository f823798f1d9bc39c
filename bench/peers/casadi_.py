"""CasADi (SX expressions, casadi.integrator).

Variants (float64, one thread unless the row says otherwise):
  cvodes       SUNDIALS CVODES: Adams + functional iteration (non-stiff), BDF + Newton with the exact symbolic
               Jacobian (P3).  Gradient = casadi.gradient of the loss expression: reverse mode through the
               integrator = CVODES adjoint sensitivities (CVodeB, checkpointing).  Not Dormand-Prince.  Main row.
  erk_codegen  CasADi's own adaptive explicit RK 5(4) ('erk' plugin, method rk45; not exactly DP5), loss and
               loss+gradient (discrete adjoint of the taped steps) exported with casadi.CodeGenerator to C,
               compiled with gcc -O3 -march=native and loaded with casadi.external (P1, P4, P6; --variants all:
               every non-stiff problem).  Its cold time includes code generation and gcc.
  erk          the same without code generation (--variants all).
  rosenbrock   CasADi's Rosenbrock-Wanner 5(4), P3 (--variants all).
P6: F.map(N, 'serial') and F.map(N, 'thread', cores) of the P1 integrator to t = 10.

    python bench/peers/casadi_.py --problems P1,P3
"""
import time

T_START = time.perf_counter()

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import casadi as ca  # noqa: E402

import bench_common as C  # noqa: E402

T_IMPORTED = time.perf_counter()
CC_FLAGS = ["-O3", "-march=native", "-fPIC", "-shared"]
PLUGIN = {"cvodes": "cvodes", "erk": "erk", "erk_codegen": "erk", "rosenbrock": "rosenbrock"}
TAPE_STEPS = 4000


def build_problem(name):
    if name in ("P1", "P6"):
        x = ca.SX.sym("x", 2)
        p = ca.SX.sym("p", 4)
        ode = ca.vertcat(p[0] * x[0] - p[1] * x[0] * x[1], p[3] * x[0] * x[1] - p[2] * x[1])
        pr = dict(x=x, p=p, ode=ode, x0=C.P1_Z0, p0=C.P1_THETA, stiff=False)
        if name == "P1":
            pr.update(ts=C.P1_TS, tol=C.P1_TOL, loss=lambda xf: ca.sumsqr(xf))
        else:
            pr.update(ts=np.array([C.P6_T1]), tol=C.P6_TOL, loss=None)
        return pr
    if name == "P3":
        x = ca.SX.sym("y", 3)
        p = ca.SX.sym("k", 3)
        ode = ca.vertcat(-p[0] * x[0] + p[2] * x[1] * x[2], p[0] * x[0] - p[2] * x[1] * x[2] - p[1] * x[1] ** 2,
                         p[1] * x[1] ** 2)
        return dict(x=x, p=p, ode=ode, x0=C.P3_Z0, p0=C.P3_K, ts=C.P3_TS, tol=C.P3_TOL, stiff=True,
                    loss=lambda xf: xf[2, xf.shape[1] - 1])
    if name == "P4":
        x = ca.SX.sym("x", 3)
        p = ca.SX.sym("p", 3)
        ode = ca.vertcat(p[0] * (x[1] - x[0]), x[0] * (p[1] - x[2]) - x[1], x[0] * x[1] - p[2] * x[2])
        return dict(x=x, p=p, ode=ode, x0=C.P4_Z0, p0=C.P4_THETA, ts=C.P4_TS, tol=C.P4_TOL, stiff=False,
                    loss=lambda xf: ca.sumsqr(xf))
    if name.startswith("P5_n"):
        n = int(name[4:])
        W, z0 = C.p5_data(n)
        x = ca.SX.sym("z", n)
        p = ca.SX.sym("W", n * n)
        Ws = ca.reshape(p, n, n).T          # p is W row-major; casadi reshape is column-major
        ode = ca.tanh(ca.mtimes(Ws, x)) - 0.5 * x
        return dict(x=x, p=p, ode=ode, x0=z0, p0=W.ravel(), ts=C.P5_TS, tol=C.P5_TOL, stiff=False,
                    loss=lambda xf: ca.sumsqr(xf))
    if name == "P2":
        x = ca.SX.sym("y", 2)
        p = ca.SX.sym("theta", 252)
        W1 = ca.reshape(p[0:100], 2, 50).T
        b1 = p[100:150]
        W2 = ca.reshape(p[150:250], 50, 2).T
        b2 = p[250:252]
        ode = ca.mtimes(W2, ca.tanh(ca.mtimes(W1, x ** 3) + b1)) + b2
        ode_true = ca.mtimes(C.P2_A.T, x ** 3)
        return dict(x=x, p=p, ode=ode, ode_true=ode_true, x0=C.P2_Y0, p0=C.p2_flat_params(), ts=C.p2_batch_ts(),
                    tol=C.P2_TOL, stiff=False, loss=None)
    raise ValueError(name)


def integrator_opts(plugin, pr, codegen=False):
    o = {"reltol": pr["tol"]["rtol"], "abstol": pr["tol"]["atol"], "max_num_steps": 1000000}
    if plugin == "cvodes":
        if pr["stiff"]:
            o.update(linear_multistep_method="bdf", nonlinear_solver_iteration="newton")
        else:
            o.update(linear_multistep_method="adams", nonlinear_solver_iteration="functional")
    elif plugin == "erk":
        o["method"] = "rk45"
    if codegen:
        o["max_tape_steps"] = TAPE_STEPS
    return o


def compile_codegen(funcs, tag, workdir):
    cname = "cg_%s.c" % tag
    cg = ca.CodeGenerator(cname, {"with_header": False})
    for f in funcs:
        cg.add(f)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        t0 = time.perf_counter()
        cg.generate()
        t1 = time.perf_counter()
        so = os.path.join(workdir, "cg_%s.so" % tag)
        subprocess.check_call(["gcc"] + CC_FLAGS + [cname, "-o", so, "-lm"])
        t2 = time.perf_counter()
    finally:
        os.chdir(cwd)
    return [ca.external(f.name(), so) for f in funcs], {"codegen_s": t1 - t0, "gcc_s": t2 - t1}


class Built:
    pass


def build(name, variant, workdir=None):
    """Forward (loss) and gradient (loss, dL/d[x0; p]) Functions."""
    t0 = time.perf_counter()
    pr = build_problem(name)
    plugin = PLUGIN[variant]
    cg = variant.endswith("_codegen")
    B = Built()
    B.pr, B.info = pr, {}
    nx, npar = pr["x"].numel(), pr["p"].numel()
    pp = ca.MX.sym("p", npar)
    if name == "P2":
        Ftrue = ca.integrator("Ftrue", plugin, {"x": pr["x"], "ode": pr["ode_true"]}, 0.0, C.P2_TS,
                              integrator_opts(plugin, pr, cg))
        F = ca.integrator("F", plugin, {"x": pr["x"], "p": pr["p"], "ode": pr["ode"]}, 0.0, pr["ts"],
                          integrator_opts(plugin, pr, cg))
        xt0 = ca.MX.sym("xt0", 2)
        truef = ca.Function("true_P2", [xt0], [Ftrue(x0=xt0)["xf"]])
        true_y = np.array(truef(C.P2_Y0)).T            # (1000, 2)
        y0s, targets = C.p2_batch_from_true(true_y)
        nb_ = len(y0s)
        X0 = ca.MX.sym("X0", 2, nb_)
        xf = F.map(nb_)(x0=X0, p=ca.repmat(pp, 1, nb_))["xf"]    # 2 x (20*10): traj0 t0..t9, traj1, ...
        target = ca.DM(np.concatenate([targets[j].T for j in range(nb_)], axis=1))
        L = ca.sum1(ca.sum2(ca.fabs(xf - target))) / targets.size
        B.fwd = ca.Function("fwd_P2", [X0, pp], [L])
        B.grad = ca.Function("grad_P2", [X0, pp], [L, ca.gradient(L, pp)])
        B.args = [ca.DM(y0s.T), ca.DM(pr["p0"])]
        if cg:
            (B.fwd, B.grad, truef), B.info = compile_codegen([B.fwd, B.grad, truef], "P2_" + variant, workdir)
        B.true_fwd = lambda: truef(C.P2_Y0)
        B.grad_slice = slice(None)
    else:
        x0 = ca.MX.sym("x0", nx)
        F = ca.integrator("F", plugin, {"x": pr["x"], "p": pr["p"], "ode": pr["ode"]}, 0.0, pr["ts"],
                          integrator_opts(plugin, pr, cg))
        xf = F(x0=x0, p=pp)["xf"]
        L = pr["loss"](xf)
        B.fwd = ca.Function("fwd_" + name, [x0, pp], [L])
        B.grad = ca.Function("grad_" + name, [x0, pp], [L, ca.gradient(L, ca.vertcat(x0, pp))])
        B.args = [ca.DM(pr["x0"]), ca.DM(pr["p0"])]
        if cg:
            (B.fwd, B.grad), B.info = compile_codegen([B.fwd, B.grad], name + "_" + variant, workdir)
        B.grad_slice = slice(nx, None) if name == "P3" else slice(None)
    B.info["build_s"] = time.perf_counter() - t0
    return B


DESCR = {"cvodes": "CVODES %s; gradient: CVODES adjoint (CVodeB)",
         "erk": "CasADi erk rk45 (adaptive 5(4), not DP5); gradient: discrete adjoint",
         "erk_codegen": "CasADi erk rk45, loss+gradient generated as C (gcc -O3 -march=native)",
         "rosenbrock": "CasADi Rosenbrock-Wanner 5(4); gradient: discrete adjoint"}


def variants_for(name, ctx):
    if name == "P3":
        return ["cvodes", "rosenbrock"] if ctx.all else ["cvodes"]
    if ctx.all:
        return ["cvodes", "erk", "erk_codegen"]
    return ["cvodes", "erk_codegen"] if name in ("P1", "P4") else ["cvodes"]


def make_run(name):
    def run(ctx):
        rows = []
        for v in variants_for(name, ctx):
            wd = tempfile.mkdtemp(prefix="symode_bench_casadi_")
            try:
                B = build(name, v, wd)
                L = float(B.fwd(*B.args))
                if name == "P2":
                    tf = ctx.time(B.true_fwd)
                    tbf = ctx.time(lambda: B.fwd(*B.args))
                else:
                    tf = ctx.time(lambda: B.fwd(*B.args))
                tg = ctx.time(lambda: B.grad(*B.args))
                Lg, g = tg["result"]
                g = np.array(g).ravel()[B.grad_slice]
            finally:
                shutil.rmtree(wd, ignore_errors=True)
            d = DESCR[v] % (("BDF, Newton, exact Jacobian" if name == "P3" else "Adams, functional iteration")
                            if v == "cvodes" else ())
            row = {"variant": v, "solver": d, "grad_method": d.split("; ")[-1] if "; " in d else "discrete adjoint",
                   **C.tentry("forward", tf), **C.tentry("grad", tg), "loss": L, "grad": C.tolist(g), **B.info}
            if name == "P2":
                row.update(forward_what="true dynamics over all 1000 points",
                           grad_what="one iteration: F.map over the 20 batch members (own step control each)",
                           batch_forward_s_min=tbf["min"], batch_forward_s_median=tbf["median"])
            rows.append(row)
        return rows
    return run


def p6_function(variant, n_traj, threads, workdir):
    pr = build_problem("P6")
    plugin = PLUGIN[variant]
    F = ca.integrator("F6", plugin, {"x": pr["x"], "p": pr["p"], "ode": pr["ode"]}, 0.0, [C.P6_T1],
                      integrator_opts(plugin, pr, variant.endswith("_codegen")))
    X0 = ca.MX.sym("X0", 2)
    P = ca.MX.sym("P", 4, n_traj)
    Fm = F.map(n_traj, "thread", threads) if threads > 1 else F.map(n_traj, "serial")
    f = ca.Function("ens", [X0, P], [Fm(x0=ca.repmat(X0, 1, n_traj), p=P)["xf"]])
    info = {}
    if variant.endswith("_codegen"):
        (f,), info = compile_codegen([f], "P6_%d" % threads, workdir)
    return f, [ca.DM(C.P1_Z0), ca.DM(C.p6_thetas(n_traj).T)], info


def run_p6(ctx):
    rows = []
    ncpu = os.cpu_count() or 1
    thr = sorted({1, ncpu if ctx.threads == "all" else 1}, reverse=True)
    for v in (["erk_codegen", "cvodes", "erk"] if ctx.all else ["erk_codegen", "cvodes"]):
        n_traj = 10000 if v.endswith("_codegen") else 1000
        for t in thr:
            wd = tempfile.mkdtemp(prefix="symode_bench_casadi_")
            try:
                f, args, info = p6_function(v, n_traj, t, wd)
                tm = ctx.time(lambda: f(*args))
            finally:
                shutil.rmtree(wd, ignore_errors=True)
            zf = np.array(tm["result"]).T
            rows.append({"variant": "%s, F.map %s" % (v, "thread x%d" % t if t > 1 else "serial"), "threads": t,
                         **C.tentry("forward", tm), "n_traj": n_traj, "traj_per_s": n_traj / tm["min"],
                         "traj_per_s_median": n_traj / tm["median"], "final_state_first": zf[0].tolist(),
                         "final_state_mean": zf.mean(axis=0).tolist(), **info,
                         "method": "independent integrator per trajectory" +
                                   ("" if n_traj == 10000 else " (first %d parameter sets timed)" % n_traj)})
    return rows


PROBLEMS = {p: make_run(p) for p in ["P1", "P2", "P3", "P4", "P5_n4", "P5_n16", "P5_n64"]}
PROBLEMS["P6"] = run_p6


def make_cold(name):
    def cold():
        wd = tempfile.mkdtemp(prefix="symode_bench_casadi_")
        try:
            B = build(name, "cvodes", wd)
            L = float(B.fwd(*B.args))
            B.grad(*B.args)
        finally:
            shutil.rmtree(wd, ignore_errors=True)
        return {"loss": L, "variant": "cvodes"}
    return cold


def meta():
    return C.pkg_versions(["casadi", "numpy"])


if __name__ == "__main__":
    C.adapter_main("casadi", os.path.abspath(__file__), PROBLEMS, {p: make_cold(p) for p in PROBLEMS if p != "P6"},
                   meta, T_START, T_IMPORTED)
