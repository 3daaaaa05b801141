"""The Triton kernels of `rfwp.ops.triton_delta` against the float64 naive references.

Without a CUDA GPU the kernels run under Triton's interpreter (NumPy, one program at a time), so
the shapes are small. TRITON_INTERPRET must be set before the kernels are decorated, so tests/conftest.py sets it."""
import os, subprocess, sys, textwrap
import pytest, torch
pytest.importorskip("triton")
import torch.nn.functional as F
from rfwp.ops import triton_delta as td
from rfwp.ops.delta import delta_rule, delta_rule_naive
from rfwp.ops.linear import linear_attention, linear_attention_naive, elu_p1
from rfwp.utils import assert_close

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = 2e-5   # float32 kernels against the float64 reference: a correct kernel lands near 1e-7

pytestmark = pytest.mark.usefixtures("nan_fill")   # tests/conftest.py

def delta_inputs(B, T, H, K, V, seed=0):
    "L2-normalised keys (larger K Kᵀ entries than sumnorm keys, a harder test of the inverse), β in (0, 1)."
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    return [F.normalize(r(B, T, H, K), dim=-1), F.normalize(r(B, T, H, K) + 0.3, dim=-1), r(B, T, H, V),
            torch.sigmoid(r(B, T, H) + 1), r(B, H, K, V)]

def grads(fn, inputs, dtype=torch.float64, device="cpu", final_grad=True, seed=1):
    "Outputs and input gradients of `fn`, for fixed random upstream gradients on o (and on the final state)."
    xs = [None if x is None else x.detach().to(device, dtype).requires_grad_() for x in inputs]
    o, S = fn(*xs)
    g = torch.Generator().manual_seed(seed)
    do = torch.randn(o.shape, generator=g, dtype=torch.float64)
    dS = torch.randn(S.shape, generator=g, dtype=torch.float64)
    outs, gs = ([o, S], [do.to(o), dS.to(S)]) if final_grad else ([o], [do.to(o)])
    torch.autograd.backward(outs, gs)
    return [o.detach().cpu(), S.detach().cpu()] + [None if x is None else x.grad.cpu() for x in xs]

def compare(ref, out, names, tol):
    for n, a, b in zip(names, ref, out):
        assert (a is None) == (b is None), n
        if a is not None: assert_close(n, a, b, tol)

DNAMES = ["o", "S_T", "dq", "dk", "dv", "dbeta", "dS0"]
def naive_delta(q, k, v, b, S0):
    return delta_rule_naive(q, k, v, b, S0 if S0 is not None else q.new_zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[-1]))

# ---------------------------------------------------------------- fused recurrent

@pytest.mark.parametrize("B,T,H,K,V,state,final_grad,block_v", [
    (1, 1, 1, 16, 16, True, True, None),      # a single step
    (1, 37, 2, 12, 20, True, True, 8),        # odd T, non-power-of-two dims, Dk != Dv, three value blocks (last one masked)
    (2, 20, 1, 20, 12, False, False, None),   # no initial state, no gradient on the final state
    (1, 9, 1, 60, 100, True, True, 32),       # head dims 60 and 100
])
def test_fused_recurrent_matches_naive(B, T, H, K, V, state, final_grad, block_v):
    x = delta_inputs(B, T, H, K, V)
    if not state: x[4] = None
    ref = grads(naive_delta, x, final_grad=final_grad)
    out = grads(lambda q, k, v, b, S0: td.fused_recurrent_delta_rule(q, k, v, b, S0, True, block_v=block_v),
                x, torch.float32, DEV, final_grad)
    compare(ref, out, DNAMES, TOL)

# ---------------------------------------------------------------- fused recurrent with a decay g

def gated_naive(q, k, v, b, S0, g):
    return delta_rule_naive(q, k, v, b, S0 if S0 is not None else q.new_zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[-1]), g)

def log_decays(B, T, H, lo=4.0, seed=5):
    return -lo * torch.rand(B, T, H, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

@pytest.mark.parametrize("B,T,H,K,V,state,final_grad,block_v", [
    (1, 1, 1, 16, 16, True, True, None),      # a single step (one segment of one step)
    (1, 37, 2, 12, 20, True, True, 8),        # segments of 7 (the last has 2), three value blocks (last one masked)
    (2, 20, 1, 20, 12, False, False, None),   # no initial state, no gradient on the final state
    (1, 16, 1, 60, 36, True, True, 32),       # T = C²: four full segments
])
def test_fused_recurrent_gated_matches_naive(B, T, H, K, V, state, final_grad, block_v):
    x = delta_inputs(B, T, H, K, V) + [log_decays(B, T, H)]
    x[3] = 2 * x[3] - 0.1                     # β in (0, 2): negative eigenvalues too
    if not state: x[4] = None
    ref = grads(gated_naive, x, final_grad=final_grad)
    out = grads(lambda q, k, v, b, S0, g: td.fused_recurrent_delta_rule(q, k, v, b, S0, True, block_v=block_v, g=g),
                x, torch.float32, DEV, final_grad)
    compare(ref, out, DNAMES + ["dg"], TOL)

def test_gated_strong_decay_and_through_the_op():
    "α down to e^-60, where dividing by α would overflow float32."
    x = delta_inputs(1, 30, 2, 16, 16) + [log_decays(1, 30, 2, lo=60.0)]
    ref = grads(lambda *a: delta_rule(*a[:5], output_final_state=True, impl="naive", g=a[5]), x)
    out = grads(lambda *a: td.fused_recurrent_delta_rule(*a[:5], True, g=a[5]), x, torch.float32, DEV)
    assert all(torch.isfinite(t).all() for t in out)
    compare(ref, out, DNAMES + ["dg"], TOL)
    zero = grads(lambda *a: td.fused_recurrent_delta_rule(*a[:5], True, g=a[5]), x[:5] + [torch.zeros(1, 30, 2)], torch.float32, DEV)
    plain = grads(lambda *a: td.fused_recurrent_delta_rule(*a, True), x[:5], torch.float32, DEV)
    compare(plain, zero, DNAMES, 1e-6)        # g = 0: the plain kernel's results
    with pytest.raises(ValueError, match="`g`"): td.fused_recurrent_delta_rule(*[t.float() for t in x[:4]], g=torch.zeros(1, 29, 2))

# ---------------------------------------------------------------- chunked delta rule

@pytest.mark.parametrize("B,T,H,K,V,C,state,final_grad", [
    (1, 1, 1, 16, 16, 64, True, True),        # one step in a chunk of 16 (the chunk shrinks to the sequence)
    (1, 37, 2, 12, 20, 16, True, True),       # two full chunks and a partial one
    (2, 33, 1, 20, 12, 32, False, False),
    (1, 45, 1, 60, 100, 32, True, True),      # Dv = 100: two value blocks of 64 in the sequential kernels
    (1, 64, 1, 16, 16, 64, True, True),       # exactly one chunk of 64
    (1, 130, 1, 16, 8, 128, False, True),     # chunks of 128, the last one has 2 steps
    (1, 40, 1, 100, 36, 64, True, True),      # float32 with Dk > 64: chunks capped at 32, value blocks of 32 in the backward
])
def test_chunk_delta_matches_naive(B, T, H, K, V, C, state, final_grad):
    x = delta_inputs(B, T, H, K, V)
    if not state: x[4] = None
    ref = grads(naive_delta, x, final_grad=final_grad)
    out = grads(lambda q, k, v, b, S0: td.chunk_delta_rule(q, k, v, b, S0, True, chunk_size=C), x, torch.float32, DEV, final_grad)
    compare(ref, out, DNAMES, TOL)

def test_chunk_delta_similar_keys():
    "Nearly parallel keys and β near 1: entries of (I + A)⁻¹ far from the identity."
    g = torch.Generator().manual_seed(3)
    q, k, v, b, S0 = delta_inputs(1, 32, 1, 16, 16)
    k = F.normalize(torch.ones(1, 32, 1, 16, dtype=torch.float64) + 0.3 * torch.randn(1, 32, 1, 16, generator=g, dtype=torch.float64), dim=-1)
    b = torch.full_like(b, 0.95)
    ref = grads(naive_delta, [q, k, v, b, S0])
    out = grads(lambda *x: td.chunk_delta_rule(*x, True, chunk_size=32), [q, k, v, b, S0], torch.float32, DEV)
    compare(ref, out, DNAMES, 1e-4)

# ---------------------------------------------------------------- chunked delta rule with a decay g

@pytest.mark.parametrize("B,T,H,K,V,C,state,final_grad", [
    (1, 1, 1, 16, 16, 64, True, True),        # one step
    (1, 37, 2, 12, 20, 16, True, True),       # two full chunks and a partial one (γ_C is the last real step)
    (2, 33, 1, 20, 12, 32, False, False),     # no initial state, no gradient on the final state
    (1, 45, 1, 60, 100, 32, True, True),      # two value blocks in the sequential kernels
    (1, 40, 1, 100, 36, 64, True, True),      # Dk > 64: chunks capped at 32
])
def test_chunk_gated_matches_naive(B, T, H, K, V, C, state, final_grad):
    x = delta_inputs(B, T, H, K, V) + [log_decays(B, T, H)]
    x[3] = 1.9 * x[3]                         # β in (0, 1.9): negative eigenvalues too
    if not state: x[4] = None
    ref = grads(gated_naive, x, final_grad=final_grad)
    out = grads(lambda q, k, v, b, S0, g: td.chunk_delta_rule(q, k, v, b, S0, True, chunk_size=C, g=g), x, torch.float32, DEV, final_grad)
    compare(ref, out, DNAMES + ["dg"], TOL)

@pytest.mark.parametrize("kernel", ["chunk", "recurrent"])
def test_chunk_gated_strong_decay_and_zero_decay(kernel, monkeypatch):
    "α down to e^-60 through `delta_rule(impl='triton', g=)` with either kernel; g = 0 gives the plain kernel's results."
    monkeypatch.setenv("RFWP_TRITON_DELTA_KERNEL", kernel)
    x = delta_inputs(1, 40, 2, 16, 16) + [log_decays(1, 40, 2, lo=60.0)]
    ref = grads(lambda *a: delta_rule(*a[:5], output_final_state=True, impl="naive", g=a[5]), x)
    out = grads(lambda *a: delta_rule(*a[:5], output_final_state=True, impl="triton", chunk_size=16, g=a[5]), x, torch.float32, DEV)
    assert all(torch.isfinite(t).all() for t in out)
    compare(ref, out, DNAMES + ["dg"], TOL)
    zero = grads(lambda *a: td.chunk_delta_rule(*a[:5], True, chunk_size=16, g=a[5]), x[:5] + [torch.zeros(1, 40, 2)], torch.float32, DEV)
    plain = grads(lambda *a: td.chunk_delta_rule(*a, True, chunk_size=16), x[:5], torch.float32, DEV)
    compare(plain, zero, DNAMES, 1e-6)
    with pytest.raises(ValueError, match="`g`"): td.chunk_delta_rule(*[t.float() for t in x[:4]], g=torch.zeros(1, 39, 2))

# ---------------------------------------------------------------- chunked linear attention

@pytest.mark.parametrize("B,T,H,K,V,C,state", [(1, 1, 1, 16, 16, 16, True), (1, 37, 2, 12, 20, 16, True),
                                                (2, 40, 1, 60, 100, 32, False)])
def test_chunk_linear_matches_naive(B, T, H, K, V, C, state):
    q, k, v, _, S0 = delta_inputs(B, T, H, K, V)
    x = [elu_p1(q), elu_p1(k), v, S0 if state else None]
    naive = lambda q, k, v, S0: linear_attention_naive(q, k, v, S0 if S0 is not None else q.new_zeros(B, H, K, V))
    ref = grads(naive, x)
    out = grads(lambda q, k, v, S0: td.chunk_linear_attention(q, k, v, S0, True, chunk_size=C), x, torch.float32, DEV)
    compare(ref, out, ["o", "S_T", "dq", "dk", "dv", "dS0"], TOL)

# ---------------------------------------------------------------- through the ops

@pytest.mark.parametrize("kernel", ["chunk", "recurrent"])
def test_delta_rule_impl_triton(kernel, monkeypatch):
    monkeypatch.setenv("RFWP_TRITON_DELTA_KERNEL", kernel)
    x = delta_inputs(2, 21, 2, 16, 12)
    ref = grads(lambda *a: delta_rule(*a, output_final_state=True, impl="naive"), x)
    out = grads(lambda *a: delta_rule(*a, output_final_state=True, impl="triton", chunk_size=16), x, torch.float32, DEV)
    compare(ref, out, DNAMES, TOL)

@pytest.mark.parametrize("normalize", [False, True])
def test_linear_attention_impl_triton(normalize):
    q, k, v, _, S0 = delta_inputs(1, 25, 2, 16, 12)
    if normalize: S0 = torch.cat([S0, S0[..., :1].abs() + 1], -1)
    x = [elu_p1(q), elu_p1(k), v, S0]
    f = lambda impl: (lambda q, k, v, S0: linear_attention(q, k, v, normalize, S0, True, impl=impl, chunk_size=16))
    compare(grads(f("naive"), x), grads(f("triton"), x, torch.float32, DEV), ["o", "S_T", "dq", "dk", "dv", "dS0"], TOL)

@pytest.mark.parametrize("kernel", ["chunk", "recurrent"])
def test_two_segments_equal_one_pass(kernel):
    x = [t.float().to(DEV) for t in delta_inputs(1, 40, 2, 16, 16)]
    q, k, v, b, S0 = x
    f = lambda *a: td.triton_delta_rule(*a, output_final_state=True, chunk_size=16, kernel=kernel)
    o, S = f(q, k, v, b, S0)
    o1, S1 = f(q[:, :19], k[:, :19], v[:, :19], b[:, :19], S0)
    o2, S2 = f(q[:, 19:], k[:, 19:], v[:, 19:], b[:, 19:], S1)
    assert_close("o", o, torch.cat([o1, o2], 1), 1e-5); assert_close("S", S, S2, 1e-5)

@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 3e-3)])
@pytest.mark.parametrize("fn", ["chunk", "recurrent", "linear"])
def test_half_precision(dtype, tol, fn):
    "Half inputs: outputs and gradients keep the input dtype, the final state is float32, errors are rounding-sized."
    q, k, v, b, S0 = delta_inputs(1, 40, 2, 32, 16)
    if fn == "linear": x, call = [elu_p1(q) / 4, elu_p1(k) / 4, v, S0], lambda *a: td.chunk_linear_attention(*a, True, chunk_size=16)
    elif fn == "chunk": x, call = [q, k, v, b, S0], lambda *a: td.chunk_delta_rule(*a, True, chunk_size=16)
    else: x, call = [q, k, v, b, S0], lambda *a: td.fused_recurrent_delta_rule(*a, True)
    naive = (lambda q, k, v, S0: linear_attention_naive(q, k, v, S0)) if fn == "linear" else naive_delta
    ref, out = grads(naive, x), grads(call, x, dtype, DEV)
    assert out[1].dtype == torch.float32 and all(t.dtype == dtype for i, t in enumerate(out) if i != 1)
    compare(ref, out, ["o", "S_T", "dq", "dk", "dv", "d4", "d5"], tol)

# ---------------------------------------------------------------- errors

def test_nan_fill_is_on():
    assert td.new_buffer(3, dtype=torch.float32, device=DEV).isnan().all()

def test_bad_input_raises():
    q, k, v, b, S0 = [t.float().to(DEV) for t in delta_inputs(1, 8, 1, 16, 16)]
    with pytest.raises(ValueError, match="chunk_size 16, 32, 64 or 128"): td.chunk_delta_rule(q, k, v, b, chunk_size=20)
    with pytest.raises(ValueError, match="precision must be"): td.chunk_delta_rule(q, k, v, b, precision="fp64")
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"): td.chunk_delta_rule(q.double(), k.double(), v.double(), b.double())
    with pytest.raises(ValueError, match="head dims up to 256"):
        z = q.new_zeros(1, 2, 1, 257); td.chunk_linear_attention(z, z, z)
    with pytest.raises(ValueError, match="`beta`"): td.fused_recurrent_delta_rule(q, k, v, b[:, :3])
    with pytest.raises(TypeError, match="`initial_state` has dtype"): td.chunk_delta_rule(q, k, v, b, S0.half())
    with pytest.raises(ValueError, match="power of two"): td.fused_recurrent_delta_rule(q, k, v, b, block_v=12)
    with pytest.raises(ValueError, match="'chunk' or 'recurrent'"): td.triton_delta_rule(q, k, v, b, kernel="fast")
    with pytest.raises(ValueError, match="delta_rule: the Triton kernels take float32"):
        delta_rule(q.double(), k.double(), v.double(), b.double(), impl="triton")

def test_auto_keeps_torch_for_cpu_tensors():
    x = [t.float() for t in delta_inputs(1, 9, 1, 8, 8)]
    assert_close("auto", delta_rule(*x, impl="torch")[0], delta_rule(*x, impl="auto")[0], 0)

def test_cpu_without_interpreter_says_how():
    "impl='triton' on CPU tensors without TRITON_INTERPRET=1: a ValueError with the hint, not a crash."
    code = textwrap.dedent("""
        import torch
        from rfwp.ops.delta import delta_rule
        from rfwp.ops.linear import linear_attention
        x = torch.rand(1, 4, 1, 8)
        for f in (lambda: delta_rule(x, x, x, x[..., 0], impl="triton"), lambda: linear_attention(x, x, x, impl="triton")):
            try: f()
            except ValueError as e: print(e)
            else: print("no error")
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all("set TRITON_INTERPRET=1 to run the kernels on the CPU (slow)" in l for l in lines), r.stdout
    assert lines[0].startswith("delta_rule:") and lines[1].startswith("linear_attention:")

# ---------------------------------------------------------------- empty sequences

@pytest.mark.parametrize("state", [True, False])
@pytest.mark.parametrize("fn", ["delta_chunk", "delta_recurrent", "linear", "linear_normalized"])
def test_empty_sequence(fn, state, monkeypatch):
    "T = 0 through the ops with impl='triton': an empty output, the state unchanged (float32), its gradient the identity."
    q, k, v, b, S0 = [t.float().to(DEV) for t in delta_inputs(2, 0, 3, 16, 8)]
    if fn == "linear_normalized": S0 = torch.cat([S0, S0[..., :1].abs()], -1)
    S0 = S0.requires_grad_() if state else None
    if fn.startswith("delta"):
        monkeypatch.setenv("RFWP_TRITON_DELTA_KERNEL", fn.split("_")[1])
        o, S = delta_rule(q, k, v, b, S0, True, impl="triton")
    else: o, S = linear_attention(q, k, v, fn == "linear_normalized", S0, True, impl="triton")
    assert o.shape == (2, 0, 3, 8) and S.dtype == torch.float32
    if state:
        assert_close("S_T", S0, S, 0)
        g = torch.randn_like(S); S.backward(g); assert_close("dS0", g, S0.grad, 0)
    else: assert S.shape == (2, 3, 16, 8 + (fn == "linear_normalized")) and not S.any()

@pytest.mark.parametrize("fn", ["fused", "chunk", "linear"])
def test_kernels_take_an_empty_sequence(fn):
    "The kernel entry points themselves, called directly with T = 0."
    q, k, v, b, S0 = [t.float().to(DEV) for t in delta_inputs(1, 0, 2, 16, 16)]
    S0.requires_grad_()
    f = dict(fused=lambda: td.fused_recurrent_delta_rule(q, k, v, b, S0, True), chunk=lambda: td.chunk_delta_rule(q, k, v, b, S0, True),
             linear=lambda: td.chunk_linear_attention(q, k, v, S0, True))[fn]
    o, S = f()
    assert o.shape == (1, 0, 2, 16)
    assert_close("S_T", S0, S, 0)
    S.sum().backward(); assert_close("dS0", torch.ones_like(S0), S0.grad, 0)

def test_empty_sequence_cpu_without_interpreter_still_says_how():
    code = textwrap.dedent("""
        import torch
        from rfwp.ops.delta import delta_rule
        x = torch.rand(1, 0, 1, 8)
        try: delta_rule(x, x, x, x[..., 0], impl="triton")
        except ValueError as e: print(e)
        else: print("no error")
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "set TRITON_INTERPRET=1 to run the kernels on the CPU (slow)" in r.stdout, r.stdout
