"""Network blocks, symbolic side: the blocks' SymPy atoms, architecture, parameters and canonical form.

``symode.nn`` is the public module (``nn.dense``, ``nn.mlp``, ``nn.Block``...); this module holds the
machinery the symbolic model uses (``collect_networks``, ``CanonBlock``, ``Networks``), so that the symbolic
layer never imports the public module. It imports only SymPy, NumPy and the symbolic layer.

Registry
--------
A block's output atoms (``NetOutput``) name their block by ``uid``; ``_REGISTRY`` maps uids to blocks.
``network_blocks(rhs)`` lists the blocks an expression uses (what travels with a pickled model) and
``blocks_registered(blocks)`` makes shipped blocks the ones their atoms name while a model is rebuilt.
"""
from __future__ import annotations

import contextlib
import itertools
import numbers
import os
import threading

import numpy as np
import sympy as sp

from .._errors import ModelError
from .canonical import canonical_symbols

ACTIVATIONS = ("tanh", "sigmoid", "relu", "softplus", "identity")
_ALIASES = {"linear": "identity", "none": "identity", None: "identity", "logistic": "sigmoid"}

# Block identities: increasing in creation order (the model's topological order of blocks), starting at a random
# offset so that blocks shipped to another process (symode.distributed) do not collide with blocks made there.
_uids = itertools.count(int.from_bytes(os.urandom(4), "big") << 24)
_REGISTRY: dict = {}  # uid -> Block; blocks are small and their output atoms may outlive the user's handle


class NetOutput(sp.Symbol):
    """Output ``k`` of a network block: a real SymPy symbol that stands for the block's value.

    Two blocks never share outputs even if their names are equal (the block's identity is part of the atom,
    as for ``sympy.Dummy``). The atom is replaced by a canonical symbol before anything is generated.
    """

    _symode_net_output = True
    __slots__ = ("uid", "k")

    def __new__(cls, name, uid, k):
        obj = sp.Symbol.__xnew__(cls, name, real=True)
        obj.uid = int(uid)
        obj.k = int(k)
        return obj

    def __getnewargs_ex__(self):
        return (self.name, self.uid, self.k), {}

    def _hashable_content(self):
        return sp.Symbol._hashable_content(self) + (self.uid, self.k)

    def sort_key(self, order=None):
        return self.class_key(), (2, (self.name, self.uid, self.k)), sp.S.One.sort_key(), sp.S.One

    @property
    def block(self):
        return _REGISTRY[self.uid]


def _activation(name):
    if name is not None and not isinstance(name, str):
        raise ModelError(f"an activation must be a name (str), got {type(name).__name__} {name!r}; valid: "
                         f"{', '.join(ACTIVATIONS)}")
    key = name.lower() if isinstance(name, str) else name
    key = _ALIASES.get(key, key)
    if key not in ACTIVATIONS:
        raise ModelError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return key


def _name(name):
    if not isinstance(name, str) or not name:
        raise ModelError(f"a block name must be a non-empty string, got {name!r}")
    return name


def _inputs(inputs):
    if isinstance(inputs, Block):
        return list(inputs.outputs)
    if isinstance(inputs, (str, bytes)):
        raise ModelError("block inputs must be SymPy expressions; symode never evaluates strings")
    if isinstance(inputs, sp.MatrixBase):
        seq = list(inputs)
    elif isinstance(inputs, sp.Basic):
        seq = [inputs]
    else:
        try:
            seq = list(inputs)
        except TypeError:
            raise ModelError(f"block inputs must be a sequence of SymPy expressions, got "
                             f"{type(inputs).__name__}") from None
    out = []
    for i, e in enumerate(seq):
        if isinstance(e, Block):
            out.extend(e.outputs)
            continue
        if isinstance(e, (str, bytes)) or isinstance(e, bool):
            raise ModelError(f"block input {i} is {type(e).__name__}; inputs must be SymPy expressions")
        if isinstance(e, (int, float)):
            e = sp.Float(e) if isinstance(e, float) else sp.Integer(e)
        if not isinstance(e, sp.Expr):
            raise ModelError(f"block input {i} must be a SymPy expression, got {type(e).__name__}: {e!r}")
        out.append(e)
    if not out:
        raise ModelError("a block needs at least one input")
    return out


class Layer:
    """One dense layer y = act(W x + b), W of shape (n_out, n_in)."""

    __slots__ = ("n_in", "n_out", "activation", "bias", "W", "b")

    def __init__(self, n_in, n_out, activation, bias, W, b):
        self.n_in, self.n_out, self.activation, self.bias = n_in, n_out, activation, bias
        self.W, self.b = W, b  # tuples of parameter symbols (W row-major)

    @property
    def n_params(self):
        return self.n_in * self.n_out + (self.n_out if self.bias else 0)

    def spec(self):
        return (self.n_in, self.n_out, self.activation, bool(self.bias))


class Block:
    """A feed-forward network block: ``outputs = layers(inputs)``.

    Attributes
    ----------
    name : str
    inputs : tuple of sympy.Expr (the expressions the network is applied to)
    layers : tuple of Layer
    outputs : list of NetOutput (use them in right-hand sides)
    params : tuple of sympy.Symbol (W1 row-major, b1, W2 row-major, b2, ...)
    n_params : int
    """

    def __init__(self, inputs, sizes, activations, biases, name):
        self.name = _name(name)
        self.inputs = tuple(_inputs(inputs))
        sizes = layer_sizes(sizes)
        self.uid = next(_uids)
        layers, params = [], []
        n_in = len(self.inputs)
        single = len(sizes) == 1
        for li, (n_out, act, bias) in enumerate(zip(sizes, activations, biases), start=1):
            tag = "" if single else str(li)
            W = tuple(sp.Symbol(f"{self.name}.W{tag}[{i},{j}]", real=True) for i in range(n_out) for j in range(n_in))
            b = tuple(sp.Symbol(f"{self.name}.b{tag}[{i}]", real=True) for i in range(n_out)) if bias else ()
            layers.append(Layer(n_in, n_out, act, bool(bias), W, b))
            params.extend(W)
            params.extend(b)
            n_in = n_out
        self.layers = tuple(layers)
        self.params = tuple(params)
        self.n_params = len(params)
        self.outputs = [NetOutput(f"{self.name}[{k}]", self.uid, k) for k in range(sizes[-1])]
        _REGISTRY[self.uid] = self

    # ------------------------------------------------------------------ description
    @property
    def n_inputs(self):
        return len(self.inputs)

    @property
    def n_outputs(self):
        return len(self.outputs)

    def __len__(self):
        return len(self.outputs)

    def __getitem__(self, k):
        return self.outputs[k]

    def __iter__(self):
        return iter(self.outputs)

    def __repr__(self):
        arch = "-".join([str(self.n_inputs)] + [f"{L.n_out}{'' if L.activation == 'identity' else ':' + L.activation}"
                                                  for L in self.layers])
        return f"Block({self.name!r}, {arch}, n_params={self.n_params})"

    def spec(self):
        """A hashable description of the architecture (sizes, activations, biases)."""
        return tuple(L.spec() for L in self.layers)

    # ------------------------------------------------------------------ parameters
    def init(self, seed=0, scheme="normal", std=0.1):
        """Initial parameter vector in the block's order (W1, b1, W2, b2, ...); biases are zero.

        Parameters
        ----------
        seed : int or numpy.random.Generator
        scheme : {"normal", "glorot", "he"}
            ``normal``: W ~ normal(0, std) for each layer in turn from one ``default_rng(seed)`` (the
            reference problem P2's draw: ``rng.normal(0, 0.1, (50, 2))`` then ``rng.normal(0, 0.1, (2, 50))``);
            ``glorot``: uniform(-a, a), a = sqrt(6 / (n_in + n_out)); ``he``: normal(0, sqrt(2 / n_in)).
        """
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        parts = []
        for L in self.layers:
            shape = (L.n_out, L.n_in)
            if scheme == "normal":
                W = rng.normal(0.0, std, shape)
            elif scheme in ("glorot", "xavier"):
                a = np.sqrt(6.0 / (L.n_in + L.n_out))
                W = rng.uniform(-a, a, shape)
            elif scheme in ("he", "kaiming"):
                W = rng.normal(0.0, np.sqrt(2.0 / L.n_in), shape)
            else:
                raise ModelError(f"unknown init scheme {scheme!r}; valid: 'normal', 'glorot', 'he'")
            parts.append(W.ravel())
            if L.bias:
                parts.append(np.zeros(L.n_out))
        return np.concatenate(parts)

    def unpack(self, theta):
        """Split a parameter vector of this block into [(W, b or None), ...] arrays per layer."""
        theta = np.asarray(theta, dtype=float).ravel()
        if theta.size != self.n_params:
            raise ModelError(f"expected {self.n_params} parameters for {self!r}, got {theta.size}")
        out, o = [], 0
        for L in self.layers:
            W = theta[o:o + L.n_in * L.n_out].reshape(L.n_out, L.n_in)
            o += W.size
            b = None
            if L.bias:
                b = theta[o:o + L.n_out]
                o += L.n_out
            out.append((W, b))
        return out

    def __call__(self, u, theta):
        """Evaluate the network numerically (NumPy) at input values ``u`` with parameters ``theta``."""
        x = np.asarray(u, dtype=float)
        for L, (W, b) in zip(self.layers, self.unpack(theta)):
            s = W @ x + (b if b is not None else 0.0)
            x = _np_act(L.activation, s)
        return x

    # ------------------------------------------------------------------ flat reference
    def expressions(self, inputs=None):
        """The outputs as flat SymPy expressions of the inputs and parameter symbols (for reference and
        display; the generated code never uses this form)."""
        x = list(self.inputs if inputs is None else inputs)
        for L in self.layers:
            nx = []
            for i in range(L.n_out):
                s = sp.Add(*[L.W[i * L.n_in + j] * x[j] for j in range(L.n_in)])
                if L.bias:
                    s = s + L.b[i]
                nx.append(sym_act(L.activation, s))
            x = nx
        return x


def sym_act(act, s):
    """The activation as a SymPy expression."""
    if act == "tanh":
        return sp.tanh(s)
    if act == "sigmoid":
        return 1 / (1 + sp.exp(-s))
    if act == "relu":
        return sp.Piecewise((s, s > 0), (0, True))
    if act == "softplus":
        return sp.log(1 + sp.exp(s))
    return s


def _np_act(act, s):
    if act == "tanh":
        return np.tanh(s)
    if act == "sigmoid":
        return 1.0 / (1.0 + np.exp(-s))
    if act == "relu":
        return np.where(s > 0, s, 0.0)
    if act == "softplus":
        return np.logaddexp(0.0, s)
    return s


# ---------------------------------------------------------------------- canonical form (used by the model)


class CanonBlock:
    """A block as the generated code sees it: architecture, parameter offset and canonical inputs.

    Attributes
    ----------
    index : int (position in the model's topological order)
    layers : tuple of (n_in, n_out, activation, bias)
    offset : int (index of the block's first parameter in theta)
    n_params, n_in, n_out : int
    inputs_c : tuple of sympy.Expr (canonical symbols; may use h-symbols of earlier blocks)
    h : tuple of canonical output symbols
    block : the user's Block
    """

    def __init__(self, index, block, offset, h):
        self.index, self.block, self.offset, self.h = index, block, offset, h
        self.layers = block.spec()
        self.n_params = block.n_params
        self.n_in = block.n_inputs
        self.n_out = block.n_outputs
        self.inputs_c = ()

    def layer_offsets(self):
        """[(weight offset, bias offset or None)] in theta for each layer."""
        out, o = [], self.offset
        for n_in, n_out, _act, bias in self.layers:
            ow = o
            o += n_in * n_out
            ob = None
            if bias:
                ob = o
                o += n_out
            out.append((ow, ob))
        return out

    def output_param_columns(self, r):
        """Theta columns that output r depends on structurally: every weight of the hidden layers and
        row r (and bias r) of the last layer."""
        offs = self.layer_offsets()
        cols = []
        for (ow, ob), (n_in, n_out, _a, bias) in zip(offs[:-1], self.layers[:-1]):
            cols.extend(range(ow, ow + n_in * n_out))
            if bias:
                cols.extend(range(ob, ob + n_out))
        ow, ob = offs[-1]
        n_in = self.layers[-1][0]
        cols.extend(range(ow + r * n_in, ow + (r + 1) * n_in))
        if ob is not None:
            cols.append(ob + r)
        return cols


class Networks:
    """The network blocks of a model in topological (creation) order, with their canonical data."""

    def __init__(self, blocks, key):
        self.blocks = blocks
        self.key = key
        self.h_index = {s: (cb.index, r) for cb in blocks for r, s in enumerate(cb.h)}

    def __len__(self):
        return len(self.blocks)

    def flat_substitution(self):
        """{canonical h symbol: flat canonical expression} (for display and reference only)."""
        sub = {}
        for cb in self.blocks:
            L = cb.block
            w_c = _CANON_P(cb)
            params = dict(zip(L.params, w_c))
            x = [e.xreplace(sub) for e in cb.inputs_c]
            exprs = [e.xreplace(params) for e in L.expressions(inputs=x)]
            sub.update(zip(cb.h, exprs))
        return sub


def _CANON_P(cb):
    return canonical_symbols("p", cb.offset + cb.n_params)[cb.offset:]


def _net_atoms(e):
    return {s for s in e.free_symbols if getattr(s, "_symode_net_output", False)}


def collect_networks(rhs, params, mapping, check_expr):
    """Find the blocks used by ``rhs`` (directly or through other blocks' inputs), check their parameters and
    inputs, and add their outputs to ``mapping`` (user atom -> canonical symbol).

    Parameters
    ----------
    rhs : sequence of sympy.Expr (user symbols)
    params : sequence of declared parameter symbols
    mapping : dict, user symbol -> canonical symbol (states, params, t); extended in place
    check_expr : callable(expr, what) validating an input expression (declared symbols, no unsupported nodes)

    Returns
    -------
    Networks or None (no blocks)
    """
    found = {}
    todo = set()
    for e in rhs:
        todo |= _net_atoms(e)
    while todo:
        atom = todo.pop()
        uid = atom.uid
        if uid in found:
            continue
        blk = _REGISTRY.get(uid)
        if blk is None or atom.k >= blk.n_outputs or blk.outputs[atom.k] != atom:
            raise ModelError(f"'{atom}' is not an output of a known network block")
        found[uid] = blk
        for i, e in enumerate(blk.inputs):
            # checked (depth first, iteratively) before anything recursive such as free_symbols touches it
            check_expr(e, f"input {i} of network block {blk.name!r}")
            todo |= _net_atoms(e)
    if not found:
        return None
    p_index = {s: k for k, s in enumerate(params)}
    order = sorted(found)  # creation order is a topological order (inputs exist before the block)
    blocks = []
    for b, uid in enumerate(order):
        blk = found[uid]
        missing = [s for s in blk.params if s not in p_index]
        if missing:
            raise ModelError(f"the parameters of network block {blk!r} are not declared (e.g. '{missing[0]}'); "
                             f"pass them in `params`, e.g. params=[...] + list({blk.name}.params)")
        off = p_index[blk.params[0]]
        if any(p_index[s] != off + j for j, s in enumerate(blk.params)):
            raise ModelError(f"the parameters of network block {blk!r} must be declared contiguously and in the "
                             f"block's order (W1, b1, W2, b2, ...): pass list(block.params) as one slice")
        h = canonical_symbols(f"h{b}", blk.n_outputs)
        blocks.append(CanonBlock(b, blk, off, h))
        mapping.update(zip(blk.outputs, h))
    key_parts = []
    for cb in blocks:
        blk = cb.block
        for i, e in enumerate(blk.inputs):
            later = [a for a in _net_atoms(e) if a.uid >= blk.uid]
            if later:
                raise ModelError(f"input {i} of network block {blk.name!r} uses '{later[0]}', which is not the "
                                 "output of an earlier block")
        cb.inputs_c = tuple(e.xreplace(mapping) for e in blk.inputs)
        key_parts.append(f"block{cb.index}:{cb.layers!r}:off={cb.offset}:" + "|".join(sp.srepr(e) for e in cb.inputs_c))
    return Networks(blocks, ";".join(key_parts))


# ---------------------------------------------------------------------- argument validation (nn.dense, nn.mlp)


def layer_size(value, what):
    """A layer size as a positive int; refuses bools, strings and non-integral numbers (never truncates)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ModelError(f"{what} must be a positive integer, got {type(value).__name__} {value!r}")
    if isinstance(value, numbers.Integral):
        size = int(value)
    else:
        v = float(value)
        if not v.is_integer():
            raise ModelError(f"{what} must be a positive integer, got {value!r} (sizes are never rounded)")
        size = int(v)
    if size < 1:
        raise ModelError(f"{what} must be a positive integer, got {value!r}")
    return size


def layer_sizes(sizes):
    """`sizes` of nn.mlp as a list of positive ints."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise ModelError(f"`sizes` must be a sequence of positive integers (one per layer), got "
                         f"{type(sizes).__name__} {sizes!r}")
    sizes = list(sizes)
    if not sizes:
        raise ModelError("`sizes` must list at least one layer size")
    return [layer_size(s, f"`sizes[{i}]`") for i, s in enumerate(sizes)]


def bias_flag(value, what):
    """A bias flag as a bool; refuses anything that is not a bool (``"no"`` would be truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ModelError(f"{what} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


# ---------------------------------------------------------------------- registry helpers (pickling, shipping)


def network_blocks(rhs):
    """{uid: Block} of the network blocks a right-hand side uses, directly or through other blocks' inputs."""
    found = {}
    todo = [s for e in rhs for s in e.free_symbols if getattr(s, "_symode_net_output", False)]
    while todo:
        s = todo.pop()
        if s.uid in found:
            continue
        block = s.block
        found[s.uid] = block
        todo.extend(a for e in block.inputs for a in e.free_symbols if getattr(a, "_symode_net_output", False))
    return found


_BLOCKS_LOCK = threading.Lock()


@contextlib.contextmanager
def blocks_registered(blocks):
    """Make the shipped blocks ({uid: Block}) the ones their output atoms name while a model is built here."""
    if not blocks:
        yield
        return
    with _BLOCKS_LOCK:
        saved = {uid: _REGISTRY.get(uid) for uid in blocks}
        _REGISTRY.update(blocks)
        try:
            yield
        finally:
            for uid, old in saved.items():
                if old is not None:
                    _REGISTRY[uid] = old
