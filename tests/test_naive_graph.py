"""The per-step references split time with `unbind`: indexing `x[:, t]` inside the loop would make every step's backward
add a zero-padded gradient as large as all of `x` (O(T²) work; minutes and a crash in `rfwp bench ops` at T = 4096).
Checked on the autograd graph itself, so the check is exact and independent of the machine's speed."""
import collections
import pytest
import torch
from rfwp.ops import OPS

B, T, H, D, F = 1, 6, 2, 4, 5

def _r(*s): return torch.randn(*s, dtype=torch.float64, requires_grad=True)

def _inputs(name):
    "Positional args and keyword args of a small call of op `name`, every tensor a leaf that requires grad."
    x, b, g = (lambda *s: _r(B, T, H, *s)), (lambda *s: torch.rand(B, T, H, *s, dtype=torch.float64).requires_grad_()), \
              (lambda *s: (-torch.rand(B, T, H, *s, dtype=torch.float64)).requires_grad_())
    if name == "linear_attention": return [x(D), x(D), x(D)], {}
    if name == "delta_rule": return [x(D), x(D), x(D), b()], dict(g=g())
    if name == "delta_mlp": return [x(D), [x(D), x(F)], [x(F), x(D)], [b(), b()]], dict(g=g())
    if name == "delta_delta": return [x(D), x(D), x(3 * D + 1), b()], dict(g=g())
    if name == "delta_rnn": return [x(D), x(D), x(D), b(), x(D).softmax(-1), x(D), b()], dict(g=g())
    if name == "delta_lstm": return [x(3, D), x(3, D), x(3, D), b(3), x(3, D).softmax(-1), x(3, D), b(3)], dict(g=g(3))
    if name == "recurrent_delta_rule": return [x(D), x(D), x(D), b(), _r(H, D, D), _r(H, D, D), _r(H, D, D), _r(H, D)], dict(g=g())
    if name == "srwm": return [x(D).softmax(-1), _r(H, D, 3 * D + 4)], {}
    raise KeyError(name)

def _node_names(t):
    "How many nodes of each type the autograd graph behind `t` has; `select time` counts selects of one step along dim 1 (of size T)."
    seen, stack, names = set(), [t.grad_fn], collections.Counter()
    while stack:
        f = stack.pop()
        if f is None or f in seen: continue
        seen.add(f); names[type(f).__name__] += 1
        if type(f).__name__ == "SelectBackward0" and f._saved_dim == 1 and f._saved_self_sym_sizes[1] == T: names["select time"] += 1
        stack += [n for n, _ in f.next_functions]
    return names

@pytest.mark.parametrize("name", list(OPS))
def test_naive_reference_splits_time_once(name):
    args, kw = _inputs(name)
    o, _ = OPS[name](*args, impl="naive", **kw)
    names = _node_names(o)
    assert names["UnbindBackward0"] >= 1, f"{name}: the naive loop does not split time with unbind ({dict(names)})"
    assert names["select time"] == 0, f"{name}: the naive loop indexes time step by step ({names['select time']} selects of a step)"
