"""Causality under non-finite input: a NaN or inf at step t reaches no output before t, on every path, as in the per-step
reference. The chunked torch paths multiply a chunk's steps together (0 · NaN = NaN), so before `pick_impl` sent such input
to the reference, a NaN at step 150 of 200 poisoned every output from step 128 on (the whole chunk), and at T = 6 all of them."""
import pytest, torch
from rfwp.ops import delta_rule, linear_attention, elu_sumnorm
from test_fastnets import OPS
pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py

def chunked_inputs(B, T, H, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    return [elu_sumnorm(r(B, T, H, D)), elu_sumnorm(r(B, T, H, D)), r(B, T, H, D), torch.sigmoid(r(B, T, H))]

CASES = {
    "linear_attention": (lambda B, T, H, D: chunked_inputs(B, T, H, D)[:3], lambda impl: lambda q, k, v: linear_attention(q, k, v, impl=impl)),
    "delta_rule": (chunked_inputs, lambda impl: lambda q, k, v, b: delta_rule(q, k, v, b, impl=impl)),
    "delta_rule gated": (lambda B, T, H, D: chunked_inputs(B, T, H, D) + [-0.1 * torch.rand(B, T, H, dtype=torch.float64)],
                         lambda impl: lambda q, k, v, b, g: delta_rule(q, k, v, b, g=g, impl=impl)),
    **{f"fastnets {k}": (lambda B, T, H, D, f=f: f(B, T, H, D), (lambda fn: lambda impl: fn(impl))(fn)) for k, (f, fn) in OPS.items()},
}

def first_out(r): return r[0] if isinstance(r, tuple) else r

@pytest.mark.parametrize("T,t", [(6, 4), (200, 150)])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("case", list(CASES))
def test_non_finite_input_stays_causal(case, bad, T, t):
    make, fn = CASES[case]
    x = make(2, T, 2, 8)
    i = 2 if case in ("linear_attention", "delta_rule", "delta_rule gated") else 1 + (len(x) > 12)   # the values (or the first keys)
    x[i] = x[i].clone(); x[i][0, t] = bad                             # one sequence, one step
    ref = first_out(fn("naive")(*x))
    for impl in ("torch", "auto"):
        o = first_out(fn(impl)(*x))
        assert torch.equal(torch.isfinite(o), torch.isfinite(ref)), (impl, torch.isfinite(o).flatten(2).all(-1)[0].tolist())
        assert bool(torch.isfinite(o[:, :t]).all()), "an output before the bad step is not finite"
        fin = torch.isfinite(ref)
        torch.testing.assert_close(o[fin], ref[fin], rtol=1e-9, atol=1e-9)
        assert torch.isfinite(o[1]).all()                             # the other sequence of the batch is untouched
