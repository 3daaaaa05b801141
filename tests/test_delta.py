"The delta rule: the chunked PyTorch path against the per-step reference in float64."
import pytest, torch
from rfwp.ops.delta import delta_rule, DeltaRuleChunked
from rfwp.ops.linear import elu_sumnorm
from rfwp.utils import assert_close, rel_err
from _helpers import check_state_passed_through, outputs_and_grads

def inputs(B, T, H, K, V, dtype=torch.float64, seed=0, state=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    S0 = r(B, H, K, V) if state else None
    return elu_sumnorm(r(B, T, H, K)), elu_sumnorm(r(B, T, H, K)), r(B, T, H, V), torch.sigmoid(r(B, T, H)), S0

SHAPES = [  # B, T, H, K, V, chunk
    (1, 1, 1, 16, 16, 64), (2, 63, 3, 16, 16, 64), (2, 63, 3, 16, 12, 16), (1, 70, 1, 60, 60, 32),
    (2, 65, 3, 64, 64, 64), (1, 40, 2, 12, 20, 8), (1, 17, 1, 16, 16, 1)]

@pytest.mark.parametrize("B,T,H,K,V,C", SHAPES)
@pytest.mark.parametrize("state", [True, False])
def test_chunked_matches_naive(B, T, H, K, V, C, state):
    x = inputs(B, T, H, K, V, state=state)
    f = lambda impl: (lambda q, k, v, b, S0: delta_rule(q, k, v, b, S0, True, impl=impl, chunk_size=C))
    ref, out = outputs_and_grads(f("naive"), x), outputs_and_grads(f("torch"), x)
    for name, a, b in zip(["o", "S_T", "dq", "dk", "dv", "dbeta", "dS0"], ref, out):
        assert_close(name, a, b, 1e-10)

def test_auto_is_torch_on_cpu():
    x = inputs(1, 9, 2, 8, 8)
    assert_close("auto", delta_rule(*x, impl="torch")[0], delta_rule(*x, impl="auto")[0], 0)

def test_reference_can_fail():
    "The comparison detects a wrong algorithm (here the sum rule instead of the delta rule)."
    q, k, v, b, S0 = inputs(1, 20, 1, 8, 8)
    o, _ = delta_rule(q, k, v, b, S0)
    o_wrong, _ = delta_rule(q, k, v, torch.ones_like(b), S0)
    with pytest.raises(AssertionError): assert_close("o", o, o_wrong, 1e-6)

@pytest.mark.parametrize("impl", ["naive", "torch"])
def test_two_segments_equal_one_pass(impl):
    x = inputs(2, 50, 3, 16, 16)
    def one(q, k, v, b, S0): return delta_rule(q, k, v, b, S0, True, impl=impl, chunk_size=16)
    def two(q, k, v, b, S0):
        o1, S1 = delta_rule(q[:, :23], k[:, :23], v[:, :23], b[:, :23], S0, True, impl=impl, chunk_size=16)
        o2, S2 = delta_rule(q[:, 23:], k[:, 23:], v[:, 23:], b[:, 23:], S1, True, impl=impl, chunk_size=16)
        return torch.cat([o1, o2], 1), S2
    for a, b in zip(outputs_and_grads(one, x), outputs_and_grads(two, x)): assert_close("segments", a, b, 1e-11)

def test_gradcheck():
    x = [t.detach().requires_grad_() for t in inputs(1, 7, 2, 4, 3)]
    assert torch.autograd.gradcheck(lambda q, k, v, b, S0: DeltaRuleChunked.apply(q, k, v, b, S0, 3), x)
    x = [t.detach().requires_grad_() for t in inputs(2, 5, 1, 3, 5)]
    assert torch.autograd.gradcheck(lambda q, k, v, b, S0: DeltaRuleChunked.apply(q, k, v, b, S0, 5), x)

def test_no_final_state_by_default():
    o, S = delta_rule(*inputs(1, 5, 1, 4, 4))
    assert S is None and o.shape == (1, 5, 1, 4)

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_computed_in_fp32(dtype):
    x = inputs(1, 33, 2, 16, 16, dtype=torch.float32)
    ref, _ = delta_rule(*x)
    o, S = delta_rule(*[t.to(dtype) for t in x], output_final_state=True)
    assert o.dtype == dtype and S.dtype == torch.float32
    assert rel_err(ref, o.float()) < 2e-2

def test_long_sequence_fp32():
    "T = 16384 in float32 stays finite and close to float64."
    x64 = inputs(1, 16384, 2, 16, 16, seed=3)
    o64, S64 = delta_rule(*x64, output_final_state=True)
    o32, S32 = delta_rule(*[t.float() for t in x64], output_final_state=True)
    assert torch.isfinite(o32).all() and torch.isfinite(S32).all()
    assert rel_err(o64, o32) < 1e-4 and rel_err(S64, S32) < 1e-4

@pytest.mark.parametrize("bad,match,exc", [
    (lambda q, k, v, b, S: (q[0], k, v, b), "`q` must have 4 dims", ValueError),
    (lambda q, k, v, b, S: (q, k[:1], v, b), r"`k` has shape .* B=1 does not match B=2", ValueError),
    (lambda q, k, v, b, S: (q, k, v[:, :5], b), r"`v` .* T=5 does not match T=9", ValueError),
    (lambda q, k, v, b, S: (q, k, v[:, :, :1], b), r"`v` .* H=1 does not match H=3", ValueError),
    (lambda q, k, v, b, S: (q, k[..., :3], v, b), r"`k` .* K=3 does not match K=4", ValueError),
    (lambda q, k, v, b, S: (q, k, v, b[..., None]), "`beta` must have 3 dims", ValueError),
    (lambda q, k, v, b, S: (q, k, v, b[:, :, :2]), r"`beta` .* H=2 does not match H=3", ValueError),
    (lambda q, k, v, b, S: (q, k, v.float(), b), "`v` has dtype torch.float32", TypeError),
    (lambda q, k, v, b, S: (q.long(), k, v, b), "`q` has dtype torch.int64", TypeError),
    (lambda q, k, v, b, S: (q, k, v, b, S[:, :, :2]), r"`initial_state` .* K=2 does not match K=4", ValueError),
    (lambda q, k, v, b, S: (q, k, v, b, S[0]), "`initial_state` must have 4 dims", ValueError),
    (lambda q, k, v, b, S: (q, k, v, b, S.float()), "`initial_state` has dtype", TypeError),
    (lambda q, k, v, b, S: (q, k, v, "beta"), "`beta` must be a torch.Tensor", TypeError),
])
def test_bad_input(bad, match, exc):
    x = inputs(2, 9, 3, 4, 5)
    with pytest.raises(exc, match=match): delta_rule(*bad(*x))

def test_bad_impl_and_chunk():
    x = inputs(1, 4, 1, 4, 4)
    with pytest.raises(ValueError, match="unknown impl='gpu'"): delta_rule(*x, impl="gpu")
    with pytest.raises(ValueError, match="chunk_size"): delta_rule(*x, impl="torch", chunk_size=0)

@pytest.mark.parametrize("impl", ["naive", "torch"])
@pytest.mark.parametrize("state", [True, False])
def test_empty_sequence(impl, state):
    "T = 0: an empty output and the state unchanged (zeros without one); the gradient reaches S0 as the identity."
    q, k, v, b, S0 = inputs(2, 0, 3, 8, 6, state=state)
    if state: S0.requires_grad_()
    o, S = delta_rule(q, k, v, b, S0, True, impl=impl)
    assert o.shape == (2, 0, 3, 6) and o.dtype == q.dtype
    check_state_passed_through(S0 if state else None, S, shape=(2, 3, 8, 6), dtype=q.dtype)
    assert delta_rule(q, k, v, b, S0, impl=impl)[1] is None

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_empty_sequence_half(dtype):
    q, k, v, b, S0 = inputs(1, 0, 2, 4, 4, dtype=dtype)
    o, S = delta_rule(q, k, v, b, S0, True)
    assert o.dtype == dtype and S.dtype == torch.float32
    assert_close("S_T", S0.float(), S, 0)

def test_empty_sequence_bad_input_still_raises():
    q, k, v, b, S0 = inputs(2, 0, 3, 8, 6)
    with pytest.raises(ValueError, match="`beta`"): delta_rule(q, k, v, torch.zeros(2, 1, 3, dtype=q.dtype))
    with pytest.raises(ValueError, match="`beta` must have 3 dims"): delta_rule(q, k, v, b[..., None])
    with pytest.raises(ValueError, match="`initial_state`"): delta_rule(q, k, v, b, S0.transpose(-1, -2))
    with pytest.raises(TypeError, match="`v` has dtype"): delta_rule(q, k, v.float(), b)

# --- the gated delta rule (decay g = log α) and β in (0, 2) ---

def gated(B, T, H, K, V, dtype=torch.float64, seed=0, state=True, strength=3.0):
    q, k, v, b, S0 = inputs(B, T, H, K, V, dtype, seed, state)
    g = -strength * torch.rand(B, T, H, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    return q, k, v, 2 * b, S0, g

@pytest.mark.parametrize("B,T,H,K,V,C", SHAPES)
@pytest.mark.parametrize("state", [True, False])
def test_gated_chunked_matches_naive(B, T, H, K, V, C, state):
    x = gated(B, T, H, K, V, state=state)
    f = lambda impl: (lambda q, k, v, b, S0, g: delta_rule(q, k, v, b, S0, True, impl=impl, chunk_size=C, g=g))
    ref, out = outputs_and_grads(f("naive"), x), outputs_and_grads(f("torch"), x)
    for name, a, b in zip(["o", "S_T", "dq", "dk", "dv", "dbeta", "dS0", "dg"], ref, out):
        assert_close(name, a, b, 1e-10)

def test_gated_reduces_to_plain_at_g0_and_decay_matters():
    q, k, v, b, S0, g = gated(2, 45, 2, 8, 6)
    b = b / 2                                                         # β in (0, 1): today's op
    plain = outputs_and_grads(lambda q, k, v, b, S0: delta_rule(q, k, v, b, S0, True, chunk_size=16), (q, k, v, b, S0))
    zero = outputs_and_grads(lambda q, k, v, b, S0: delta_rule(q, k, v, b, S0, True, chunk_size=16, g=torch.zeros_like(g)), (q, k, v, b, S0))
    for name, a, c in zip(["o", "S_T", "dq", "dk", "dv", "dbeta", "dS0"], plain, zero): assert_close(f"g=0 {name}", a, c, 1e-12)
    with pytest.raises(AssertionError): assert_close("decay", plain[0], delta_rule(q, k, v, b, S0, g=g)[0], 1e-6)

def test_gated_long_and_strong_decay_is_finite():
    "Decays down to e^-60 per step over long chunks: the masked exponentials never overflow (fp32)."
    q, k, v, b, S0, g = gated(1, 300, 2, 16, 16, dtype=torch.float32, strength=60.0)
    x = [t.requires_grad_() for t in (q, k, v, b, S0, g)]
    o, S = delta_rule(*x[:4], x[4], True, chunk_size=128, g=x[5])
    (o.sum() + S.sum()).backward()
    assert all(torch.isfinite(t).all() for t in [o, S] + [t.grad for t in x])
    ref, Sr = delta_rule(*[t.detach().double() for t in x[:5]], True, impl="naive", g=x[5].detach().double())
    assert_close("fp32 o", ref.float(), o.detach(), 1e-4)

def test_gated_gradcheck():
    from rfwp.ops.delta import gated_delta_chunked
    x = [t.detach().requires_grad_() for t in gated(1, 7, 2, 4, 3)]
    assert torch.autograd.gradcheck(lambda q, k, v, b, S0, g: gated_delta_chunked(q, k, v, b, g, S0, 3), x)

def test_gated_bad_input():
    q, k, v, b, S0, g = gated(1, 5, 2, 4, 4)
    with pytest.raises(ValueError, match="`g` must have 3 dims"): delta_rule(q, k, v, b, g=g[..., None])
    with pytest.raises(ValueError, match="`g`"): delta_rule(q, k, v, b, g=g[:, :3])
    with pytest.raises(TypeError, match="`g` has dtype"): delta_rule(q, k, v, b, g=g.float())
    o, S = delta_rule(q[:, :0], k[:, :0], v[:, :0], b[:, :0], S0, True, g=g[:, :0])
    assert o.shape == (1, 0, 2, 4) and torch.equal(S, S0)
