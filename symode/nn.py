"""Network blocks for hybrid models (universal differential equations, neural ODEs).

A block is a small feed-forward network applied to a list of input expressions (any SymPy expressions of
the states, parameters, t, or outputs of earlier blocks). Its outputs are opaque SymPy atoms that can be used
in a right-hand side next to physics terms; its weights are ordinary parameter symbols that you declare in
``ODE(params=...)`` (contiguously, in the block's order).

The network never becomes a flat SymPy expression: the generated module evaluates each block with loops over
its weight slice of ``theta`` (code size O(layers), not O(weights)), back-propagates through it for the
vector-Jacobian product, and combines it with the symbolic physics by the chain rule.

Examples
--------
>>> import sympy as sp, numpy as np, symode
>>> from symode import nn
>>> y0, y1 = sp.symbols("y0 y1")
>>> net = nn.mlp([y0**3, y1**3], [50, 2], activation="tanh", name="net")   # 2-50-2, 252 parameters
>>> model = symode.ODE(net.outputs, states=[y0, y1], params=net.params)
>>> theta = net.init(seed=0)        # normal(0, 0.1) weights, zero biases (W1 then W2 from one generator)

Parameter order of a block: ``W1`` (row-major, shape (n_out, n_in)), ``b1``, ``W2`` (row-major), ``b2``, ...
(a layer without bias has no ``b``). Activations: ``tanh``, ``sigmoid``, ``relu`` (derivative 0 at 0),
``softplus`` and ``identity``.
"""
from __future__ import annotations

from ._errors import ModelError
# The machinery lives in the symbolic layer (symode._symbolic.networks); these names stay importable from
# symode.nn (pickles of blocks made before the move name symode.nn.Block and symode.nn.NetOutput).
from ._symbolic.networks import (  # noqa: F401 - re-exported
    _ALIASES, _REGISTRY, ACTIVATIONS, Block, CanonBlock, Layer, NetOutput, Networks, _activation, _inputs,
    _name, _net_atoms, _np_act, _uids, bias_flag, blocks_registered, collect_networks, layer_size, layer_sizes,
    network_blocks, sym_act,
)

__all__ = ["ACTIVATIONS", "Block", "NetOutput", "dense", "mlp"]


def dense(inputs, n_out, activation="tanh", name="dense", bias=True):
    """One dense layer ``act(W u + b)`` applied to the input expressions ``inputs``.

    Parameters
    ----------
    inputs : sequence of sympy.Expr (or a Block, meaning its outputs)
    n_out : int
    activation : {"tanh", "sigmoid", "relu", "softplus", "identity"}
    name : str
        Used for the parameter names (``name.W[i,j]``, ``name.b[i]``) and the outputs (``name[k]``).
    bias : bool

    Returns
    -------
    Block
        ``.outputs`` (n_out atoms), ``.params`` (W row-major, then b), ``.init(seed)``.
    """
    n_out = layer_size(n_out, "`n_out`")
    return Block(inputs, [n_out], [_activation(activation)], [bias_flag(bias, "`bias`")], name)


def mlp(inputs, sizes, activation="tanh", name="net", output_activation="identity", bias=True):
    """A multi-layer perceptron: hidden layers with ``activation``, the last with ``output_activation``.

    Parameters
    ----------
    inputs : sequence of sympy.Expr (or a Block)
    sizes : sequence of int
        Output sizes of the layers, e.g. ``[50, 2]`` for one hidden layer of 50 and 2 outputs.
    activation : str or sequence of str
        Activation of the hidden layers (one name, or one per hidden layer).
    output_activation : str
    bias : bool or sequence of bool (one per layer)

    Returns
    -------
    Block
        ``.outputs``, ``.params`` (W1 row-major, b1, W2 row-major, b2, ...), ``.init(seed)``.
    """
    sizes = layer_sizes(sizes)
    nh = len(sizes) - 1
    if isinstance(activation, (list, tuple)):
        if len(activation) != nh:
            raise ModelError(f"`activation` lists {len(activation)} activations for {nh} hidden layers")
        acts = [_activation(a) for a in activation]
    else:
        acts = [_activation(activation)] * nh
    acts.append(_activation(output_activation))
    if isinstance(bias, (list, tuple)):
        if len(bias) != len(sizes):
            raise ModelError(f"`bias` lists {len(bias)} flags for {len(sizes)} layers")
        biases = [bias_flag(b, f"`bias[{i}]`") for i, b in enumerate(bias)]
    else:
        biases = [bias_flag(bias, "`bias`")] * len(sizes)
    return Block(inputs, sizes, acts, biases, name)
