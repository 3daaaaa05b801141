"Linear attention (sum rule) and the feature maps."
import pytest, torch
from rfwp.ops.linear import (linear_attention, LinearAttentionChunked, elu_p1, elu_sumnorm, sum_norm, softmax_fm,
                             dpfp, feature_map, to_chunks, from_chunks)
from rfwp.utils import assert_close
from _helpers import check_state_passed_through, outputs_and_grads

def inputs(B, T, H, K, V, normalize=False, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    S0 = r(B, H, K, V + int(normalize))
    if normalize: S0[..., -1] = S0[..., -1].abs() + 1  # a positive normaliser
    return elu_p1(r(B, T, H, K)), elu_p1(r(B, T, H, K)), r(B, T, H, V), S0

@pytest.mark.parametrize("B,T,H,K,V,C", [(1, 1, 1, 16, 16, 64), (2, 63, 3, 16, 12, 16), (1, 70, 1, 60, 60, 64), (2, 64, 3, 64, 64, 32)])
@pytest.mark.parametrize("normalize", [False, True])
def test_chunked_matches_naive(B, T, H, K, V, C, normalize):
    x = inputs(B, T, H, K, V, normalize)
    f = lambda impl: (lambda q, k, v, S0: linear_attention(q, k, v, normalize, S0, True, impl=impl, chunk_size=C))
    for name, a, b in zip(["o", "S_T", "dq", "dk", "dv", "dS0"], outputs_and_grads(f("naive"), x), outputs_and_grads(f("torch"), x)):
        assert_close(name, a, b, 1e-10)

def test_normalised_equals_definition():
    q, k, v, _ = inputs(1, 12, 2, 8, 8)
    o, _ = linear_attention(q, k, v, normalize=True, eps=0.0)
    att = torch.einsum('bthk,bshk->bhts', q, k).tril()                  # (B, H, T, T)
    ref = torch.einsum('bhts,bshv->bthv', att / att.sum(-1, keepdim=True), v)
    assert_close("normalised", ref, o, 1e-12)

def test_segments():
    x = inputs(2, 40, 2, 8, 8)
    def one(q, k, v, S0): return linear_attention(q, k, v, False, S0, True, impl="torch", chunk_size=8)
    def two(q, k, v, S0):
        o1, S1 = linear_attention(q[:, :13], k[:, :13], v[:, :13], False, S0, True, impl="torch", chunk_size=8)
        o2, S2 = linear_attention(q[:, 13:], k[:, 13:], v[:, 13:], False, S1, True, impl="torch", chunk_size=8)
        return torch.cat([o1, o2], 1), S2
    for a, b in zip(outputs_and_grads(one, x), outputs_and_grads(two, x)): assert_close("segments", a, b, 1e-11)

def test_gradcheck():
    x = [t.detach().requires_grad_() for t in inputs(1, 7, 2, 4, 3)]
    assert torch.autograd.gradcheck(lambda q, k, v, S0: LinearAttentionChunked.apply(q, k, v, S0, 3), x)

def test_chunks_roundtrip():
    x = torch.randn(2, 13, 3, 5)
    c = to_chunks(x, 4)
    assert c.shape == (4, 2, 3, 4, 5) and c.is_contiguous()
    assert torch.equal(from_chunks(c, 13), x)
    assert (c[-1, :, :, 1:] == 0).all()  # padding

def test_feature_maps():
    x = torch.randn(3, 7, 10, dtype=torch.float64)
    assert (elu_p1(x) > 0).all()
    assert_close("sumnorm", torch.ones(3, 7, dtype=torch.float64), elu_sumnorm(x).sum(-1), 1e-12)
    assert_close("softmax", torch.ones(3, 7, dtype=torch.float64), softmax_fm(x).sum(-1), 1e-12)
    assert_close("sum_norm", torch.tensor([0.25, 0.75]), sum_norm(torch.tensor([1., 3.])), 1e-7)
    d = dpfp(x, nu=2)
    assert d.shape == (3, 7, 40) and (d >= 0).all()
    r = torch.cat([x.clamp(min=0), (-x).clamp(min=0)], -1)
    assert_close("dpfp nu=1", r * r.roll(1, -1), dpfp(x, 1), 0)
    assert feature_map("elu_sumnorm") is elu_sumnorm
    with pytest.raises(ValueError, match="expected one of"): feature_map("nope")

def test_bad_input():
    q, k, v, S0 = inputs(2, 5, 3, 4, 6)
    with pytest.raises(ValueError, match="`v`"): linear_attention(q, k, v[:, :, :2])
    with pytest.raises(ValueError, match="`initial_state`"): linear_attention(q, k, v, normalize=True, initial_state=S0)
    with pytest.raises(TypeError, match="`k` has dtype"): linear_attention(q, k.float(), v)
    with pytest.raises(ValueError, match="unknown impl"): linear_attention(q, k, v, impl="x")

# ---- empty sequences (T = 0)

@pytest.mark.parametrize("impl", ["naive", "torch"])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("state", [True, False])
def test_empty_sequence(impl, normalize, state):
    "T = 0: an empty output (B, 0, H, Dv) and the state unchanged (zeros without one), with the identity as its gradient."
    q, k, v, S0 = inputs(2, 0, 3, 8, 6, normalize)
    S0 = S0.requires_grad_() if state else None
    o, S = linear_attention(q, k, v, normalize, S0, True, impl=impl)
    assert o.shape == (2, 0, 3, 6) and o.dtype == q.dtype
    check_state_passed_through(S0 if state else None, S, shape=(2, 3, 8, 6 + normalize), dtype=q.dtype)
    assert linear_attention(q, k, v, normalize, S0, impl=impl)[1] is None

def test_empty_sequence_half_state_in_float32():
    q, k, v, S0 = inputs(1, 0, 2, 4, 4, dtype=torch.bfloat16)
    o, S = linear_attention(q, k, v, initial_state=S0, output_final_state=True)
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32
    assert_close("S_T", S0.float(), S, 0)

def test_empty_sequence_bad_input_still_raises():
    q, k, v, S0 = inputs(2, 0, 3, 8, 6)
    with pytest.raises(ValueError, match="`k`"): linear_attention(q, torch.zeros(2, 1, 3, 8, dtype=q.dtype), v)
    with pytest.raises(ValueError, match="`initial_state`"): linear_attention(q, k, v, initial_state=S0[:, :1])
    with pytest.raises(ValueError, match="unknown impl"): linear_attention(q, k, v, impl="fast")
    with pytest.raises(ValueError, match="chunk_size"): linear_attention(q, k, v, chunk_size=0)

# ---- the rules every op shares (rfwp.utils)

def test_compute_dtype_and_upcast():
    from rfwp.utils import compute_dtype, upcast
    for dt, want in [(torch.float16, torch.float32), (torch.bfloat16, torch.float32), (torch.float32, torch.float32), (torch.float64, torch.float64)]:
        assert compute_dtype(torch.zeros(1, dtype=dt)) == want and compute_dtype(dt) == want
        assert upcast(torch.zeros(1, dtype=dt)).dtype == want
    x = torch.zeros(3)
    assert upcast(x) is x

def _run(code, **env_changes):
    import os, subprocess, sys, textwrap
    env = {**{k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}, **env_changes}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()

def test_import_does_not_load_triton():
    assert _run("import sys, rfwp.ops, rfwp.layers, rfwp.models; print('triton' in sys.modules)") == ["False"]

def test_missing_triton_is_a_clear_error():
    "Without triton, impl='triton' raises a ValueError naming the op, for every op with Triton kernels; the rest still works."
    lines = _run("""
        import sys; sys.modules['triton'] = None          # as if triton were not installed
        import torch, rfwp.ops as ops, rfwp.utils
        x, b, W, r = torch.rand(1, 3, 1, 4), torch.rand(1, 3, 1), torch.rand(1, 4, 4), torch.rand(1, 4)
        x3, b3 = torch.rand(1, 3, 1, 3, 4), torch.rand(1, 3, 1, 3)
        for f in (lambda: ops.linear_attention(x, x, x, impl="triton"), lambda: ops.delta_rule(x, x, x, b, impl="triton"),
                  lambda: ops.delta_rnn(x, x, x, b, x, x, b, impl="triton"), lambda: ops.delta_lstm(x3, x3, x3, b3, x3, x3, b3, impl="triton"),
                  lambda: ops.recurrent_delta_rule(x, x, x, b, W, W, W, r, impl="triton")):
            try: f()
            except ValueError as e: print(e)
            else: print("no error")
        print(rfwp.utils.triton_available(), ops.delta_rule(x, x, x, b, impl="auto")[0].shape)
    """)
    assert len(lines) == 6, lines
    for op, line in zip(["linear_attention", "delta_rule", "delta_rnn", "delta_lstm", "recurrent_delta_rule"], lines):
        assert line == f"{op}: impl='triton' needs the triton package, which is not installed (pip install 'rfwp[triton]')", line
    assert lines[-1] == "False torch.Size([1, 3, 1, 4])"
