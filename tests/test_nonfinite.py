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

# ---------------------------------------------------------------- the state an op returns is a state it accepts

def _segments_case(name, B=2, T=24, H=2, D=8):
    "(inputs split in time, the other inputs, a call fn(time_inputs, initial_state) -> (o, state))."
    from rfwp.ops import recurrent_delta_rule, srwm, init_srwm_weights, init_rdn_weights
    from test_fastnets import OPS
    if name in ("linear_attention", "delta_rule"):
        x = chunked_inputs(B, T, H, D)
        f = (lambda t, s: linear_attention(*t[:3], initial_state=s, output_final_state=True)) if name == "linear_attention" else \
            (lambda t, s: delta_rule(*t, initial_state=s, output_final_state=True))
        return x, f
    if name == "rdn":
        g = torch.Generator().manual_seed(0)
        x = [torch.randn(B, T, H, D, generator=g, dtype=torch.float64) for _ in range(3)] + [torch.randn(B, T, H, generator=g, dtype=torch.float64)]
        W = init_rdn_weights(H, D, g, torch.float64)
        return x, lambda t, s: recurrent_delta_rule(*t, *[w.to(t[0].dtype) for w in W], initial_state=s, output_final_state=True)
    if name == "srwm":
        g = torch.Generator().manual_seed(0)
        x = [torch.softmax(torch.randn(B, T, H, D, generator=g, dtype=torch.float64), -1)]
        W = init_srwm_weights(H, D, dtype=torch.float64)
        return x, lambda t, s: srwm(t[0], W.to(t[0].dtype), initial_state=s, output_final_state=True)
    make, fn = OPS[name]
    x = make(B, T, H, D, state=False)
    n_time = {"rnn": 7, "lstm": 7, "dd": 4}.get(name)
    if name == "mlp":                                                    # q, ks, vs, betas are per step; the LayerNorm parameters are not
        x = make(B, T, H, D, state=False, ln=False)
        return x, lambda t, s: fn("auto", state=s is not None, ln=False)(*t, *(s or ()))
    return x[:n_time], lambda t, s: fn("auto", state=s is not None)(*t, *(s or ()))

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["linear_attention", "delta_rule", "rdn", "srwm", "rnn", "lstm", "dd", "mlp"])
def test_state_returned_in_low_precision_is_accepted_back(name, dtype):
    "bf16/fp16 inputs return a float32 state; passing it back continues the sequence as one pass does (it was refused)."
    x, f = _segments_case(name)
    x = [t.to(dtype) for t in x]
    o, S = f(x, None)
    flat = lambda s: [s] if isinstance(s, torch.Tensor) else [u for v in s for u in flat(v)]
    assert all(t.dtype == torch.float32 for t in flat(S))
    o1, S1 = f([t[:, :10] for t in x], None)
    o2, S2 = f([t[:, 10:] for t in x], S1)
    torch.testing.assert_close(torch.cat([o1, o2], 1).float(), o.float(), rtol=2e-2, atol=2e-2)
    for a, b in zip(flat(S2), flat(S)): torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)
