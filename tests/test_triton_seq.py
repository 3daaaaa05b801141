"""The fused recurrent Triton kernels of `rfwp.ops.triton_seq` (RDN, Delta RNN and Delta LSTM read-outs)
against the float64 naive references.

Without a CUDA GPU the kernels run under Triton's interpreter, so the shapes are small. TRITON_INTERPRET
must be set before the kernels are decorated, so tests/conftest.py sets it."""
import os, subprocess, sys, textwrap
import pytest, torch
pytest.importorskip("triton")
from rfwp.ops import triton_seq as ts
from rfwp.ops.rdn import recurrent_delta_rule, recurrent_delta_rule_naive, init_rdn_weights
from rfwp.ops.fastnets import delta_rnn, delta_lstm
from rfwp.ops.linear import elu_sumnorm
from rfwp.utils import assert_close

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = 2e-5   # float32 kernels against the float64 reference: a correct kernel lands near 1e-7

pytestmark = pytest.mark.usefixtures("nan_fill")   # tests/conftest.py

def rnd(seed):
    g = torch.Generator().manual_seed(seed)
    return g, (lambda *s: torch.randn(*s, generator=g, dtype=torch.float64))

def rdn_inputs(B, T, H, D, seed=0):
    "xq, xk, xv, xb, R_q, R_k, R_v, r_b, S0, y0 in float64."
    g, r = rnd(seed)
    return [r(B, T, H, D), r(B, T, H, D), r(B, T, H, D), r(B, T, H), *init_rdn_weights(H, D, g, torch.float64),
            0.3 * r(B, H, D, D), r(B, H, D)]

def rnn_inputs(B, T, H, D, G=(), seed=0):
    "q, k, v, beta, kr, vr, beta_r and the initial state (S, R, y) or, with G=(3,), (S, R, h, c)."
    _, r = rnd(seed)
    s = (B, T, H, *G)
    st = [0.1 * r(B, H, *G, D, D), 0.3 * r(B, H, *G, D, D), r(B, H, D)] + ([r(B, H, D)] if G else [])
    return [elu_sumnorm(r(*s, D)), elu_sumnorm(r(*s, D)), r(*s, D), torch.sigmoid(r(*s)),
            torch.softmax(r(*s, D), -1), r(*s, D), torch.sigmoid(r(*s))] + st

def flat(out):
    if out is None: return []
    return [out] if isinstance(out, torch.Tensor) else [t for o in out for t in flat(o)]

def grads(fn, inputs, dtype=torch.float64, device="cpu", final_grad=True, seed=1):
    "Flat outputs and input gradients of `fn`, for fixed random upstream gradients on o (and on the final state)."
    xs = [None if x is None else x.detach().to(device, dtype).requires_grad_() for x in inputs]
    outs = flat(fn(*xs))
    g = torch.Generator().manual_seed(seed)
    gs = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]
    n = len(outs) if final_grad else 1
    torch.autograd.backward(outs[:n], [d.to(o) for d, o in zip(gs[:n], outs[:n])])
    return [o.detach().cpu() for o in outs] + [None if x is None else (x.grad.cpu() if x.grad is not None else None) for x in xs]

def compare(ref, out, tol, names=None):
    assert len(ref) == len(out)
    for i, (a, b) in enumerate(zip(ref, out)):
        n = names[i] if names else f"tensor {i}"
        assert (a is None) == (b is None), n
        if a is not None: assert_close(n, a, b, tol)

def op(fn, n_in, impl, state=True, **kw):
    "Call an op on flat inputs: the first `n_in` are per-step inputs and weights, the rest the initial state."
    def run(*a):
        o, st = fn(*a[:n_in], initial_state=tuple(a[n_in:]) if state else None, output_final_state=True, impl=impl, **kw)
        return (o, *st)
    return run

RDN = lambda impl, state=True: op(recurrent_delta_rule, 8, impl, state)
RNN = lambda impl, state=True: op(delta_rnn, 7, impl, state)
LSTM = lambda impl, state=True: op(delta_lstm, 7, impl, state)
RDN_NAMES = "o S_T y_T dxq dxk dxv dxb dR_q dR_k dR_v dr_b dS0 dy0".split()

# ---------------------------------------------------------------- RDN

@pytest.mark.parametrize("B,T,H,D,state,final_grad", [
    (1, 1, 1, 16, True, True),      # a single step
    (2, 13, 2, 20, True, True),     # odd T, D = 20 padded to 32, B > 1 (dR summed over the batch)
    (1, 7, 3, 12, False, False),    # no initial state, no gradient on the final state
    (1, 4, 1, 100, True, True),     # D = 100 padded to 128
])
def test_rdn_matches_naive(B, T, H, D, state, final_grad):
    x = rdn_inputs(B, T, H, D)
    if not state: x = x[:8]
    ref = grads(RDN("naive", state), x, final_grad=final_grad)
    out = grads(RDN("triton", state), x, torch.float32, DEV, final_grad)
    compare(ref, out, TOL, RDN_NAMES)

@pytest.mark.parametrize("B,T,H,D,beta_range,decay", [
    (1, 1, 1, 16, 2.0, True),       # a single step
    (2, 13, 2, 20, 2.0, True),      # segments of 4, 4, 4, 1; D = 20 padded to 32
    (1, 9, 1, 12, 1.5, False),      # beta_range alone: the reversal backward
    (1, 16, 3, 8, 1.0, True),       # T = C²
])
def test_rdn_beta_range_and_decay_match_naive(B, T, H, D, beta_range, decay):
    x = rdn_inputs(B, T, H, D)
    g = -4 * torch.rand(B, T, H, generator=torch.Generator().manual_seed(2), dtype=torch.float64) if decay else None
    f = lambda impl: op(recurrent_delta_rule, 8, impl, beta_range=beta_range, g=g)
    names = RDN_NAMES
    if decay:                       # g as an input, for its gradient
        f = lambda impl: (lambda *a: (lambda o, st: (o, *st))(*recurrent_delta_rule(*a[:8], initial_state=tuple(a[8:10]),
                                       output_final_state=True, impl=impl, beta_range=beta_range, g=a[10])))
        x, names = x + [g], RDN_NAMES + ["dg"]
    compare(grads(f("naive"), x), grads(f("triton"), x, torch.float32, DEV), TOL, names)

def test_rdn_strong_decay_stays_finite():
    "α down to e^-60: undoing a step would divide by it; the replay does not."
    x = rdn_inputs(1, 20, 2, 8) + [-60 * torch.rand(1, 20, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)]
    f = lambda impl: (lambda *a: (lambda o, st: (o, *st))(*recurrent_delta_rule(*a[:8], initial_state=tuple(a[8:10]),
                                   output_final_state=True, impl=impl, g=a[10])))
    out = grads(f("triton"), x, torch.float32, DEV)
    assert all(torch.isfinite(t).all() for t in out if t is not None)
    compare(grads(f("naive"), x), out, TOL, RDN_NAMES + ["dg"])

def test_rdn_function_directly():
    "The autograd Function against the naive loop (float32 state in, (o, S_T, y_T) out)."
    x = rdn_inputs(1, 9, 2, 24)
    ref = grads(recurrent_delta_rule_naive, x)
    out = grads(lambda *a: ts.RecurrentDeltaRuleTriton.apply(*a), x, torch.float32, DEV)
    compare(ref, out, TOL, RDN_NAMES)

def test_rdn_one_state_part():
    "initial_state=(S0, None): y0 defaults to zeros, S0 still gets its gradient."
    x = rdn_inputs(1, 5, 1, 16)
    f = lambda impl: (lambda *a: (lambda o, st: (o, *st))(*recurrent_delta_rule(*a[:8], initial_state=(a[8], None),
                                                                                 output_final_state=True, impl=impl)))
    compare(grads(f("naive"), x[:9]), grads(f("triton"), x[:9], torch.float32, DEV), TOL)

def test_rdn_zero_steps():
    x = [t.float().to(DEV) for t in rdn_inputs(1, 0, 2, 16)]
    o, (S, y) = recurrent_delta_rule(*x[:8], initial_state=tuple(x[8:]), output_final_state=True, impl="triton")
    assert o.shape == (1, 0, 2, 16)
    assert_close("S", x[8], S, 0); assert_close("y", x[9], y, 0)

def test_rdn_two_segments_equal_one_pass():
    x = [t.float().to(DEV) for t in rdn_inputs(1, 20, 2, 16)]
    o, st = recurrent_delta_rule(*x[:8], initial_state=tuple(x[8:]), output_final_state=True, impl="triton")
    o1, st1 = recurrent_delta_rule(*[t[:, :9] for t in x[:4]], *x[4:8], initial_state=tuple(x[8:]), output_final_state=True, impl="triton")
    o2, st2 = recurrent_delta_rule(*[t[:, 9:] for t in x[:4]], *x[4:8], initial_state=st1, output_final_state=True, impl="triton")
    assert_close("o", o, torch.cat([o1, o2], 1), 1e-5); assert_close("S", st[0], st2[0], 1e-5); assert_close("y", st[1], st2[1], 1e-5)

# ---------------------------------------------------------------- Delta RNN and Delta LSTM

@pytest.mark.parametrize("B,T,H,D,state,final_grad", [
    (1, 1, 1, 16, True, True),
    (2, 13, 2, 20, True, True),
    (1, 7, 1, 12, False, False),
    (1, 5, 1, 72, True, True),      # D = 72 padded to 128
])
def test_delta_rnn_matches_naive(B, T, H, D, state, final_grad):
    x = rnn_inputs(B, T, H, D)
    if not state: x = x[:7]
    compare(grads(RNN("naive", state), x, final_grad=final_grad), grads(RNN("triton", state), x, torch.float32, DEV, final_grad), TOL)

@pytest.mark.parametrize("B,T,H,D,state,final_grad", [
    (1, 1, 1, 16, True, True),
    (2, 11, 2, 20, True, True),
    (1, 6, 1, 12, False, False),
])
def test_delta_lstm_matches_naive(B, T, H, D, state, final_grad):
    x = rnn_inputs(B, T, H, D, G=(3,))
    if not state: x = x[:7]
    compare(grads(LSTM("naive", state), x, final_grad=final_grad), grads(LSTM("triton", state), x, torch.float32, DEV, final_grad), TOL)

@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_gated_matches_naive(name):
    "A decay g on the feedforward S (and beta in (0, 2)): the Triton path runs the fused recurrent gated delta kernel."
    G = (3,) if name == "lstm" else ()
    x = rnn_inputs(2, 9, 2, 12, G=G)
    x[3] = 2 * x[3] - 0.05
    x.append(-3 * torch.rand(2, 9, 2, *G, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
    fn = delta_lstm if name == "lstm" else delta_rnn
    f = lambda impl: (lambda *a: (lambda o, st: (o, *st))(*fn(*a[:7], initial_state=tuple(a[7:-1]), output_final_state=True, impl=impl, g=a[-1])))
    compare(grads(f("naive"), x), grads(f("triton"), x, torch.float32, DEV), TOL)

def test_delta_lstm_partial_state():
    "Only (S, R) given: h and c start at zero."
    x = rnn_inputs(1, 5, 1, 16, G=(3,))
    f = lambda impl: (lambda *a: (lambda o, st: (o, *st))(*delta_lstm(*a[:7], initial_state=(a[7], a[8], None, None),
                                                                       output_final_state=True, impl=impl)))
    compare(grads(f("naive"), x[:9]), grads(f("triton"), x[:9], torch.float32, DEV), TOL)

def rnn_readout_ref(z, kr, vr, br, R0, y0):
    "The Delta RNN read-out per step (delta_rnn_naive with z_t for S_tᵀq_t)."
    R, y, outs = R0, y0, []
    for t in range(z.shape[1]):
        e = vr[:, t] - torch.einsum('bhkv,bhk->bhv', R, kr[:, t])
        R = R + torch.einsum('bhk,bhv->bhkv', kr[:, t], br[:, t, :, None] * e)
        y = z[:, t] + torch.einsum('bhkv,bhk->bhv', R, torch.softmax(y, -1))
        outs.append(y)
    return torch.stack(outs, 1), R, y

def lstm_readout_ref(z, kr, vr, br, R0, h0, c0):
    "The Delta LSTM gated read-out per step (delta_lstm_naive with z_g for S_{g,t}ᵀq_{g,t})."
    R, h, c, outs = R0, h0, c0, []
    for t in range(z.shape[1]):
        e = vr[:, t] - torch.einsum('bhgkv,bhgk->bhgv', R, kr[:, t])
        R = R + torch.einsum('bhgk,bhgv->bhgkv', kr[:, t], br[:, t, ..., None] * e)
        a = z[:, t] + torch.einsum('bhgkv,bhk->bhgv', R, torch.softmax(h, -1))
        c = c + torch.sigmoid(a[:, :, 0]) * (a[:, :, 1] - c)
        h = torch.sigmoid(a[:, :, 2]) * c
        outs.append(h)
    return torch.stack(outs, 1), R, h, c

@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_readout_functions_directly(name):
    "The read-out autograd Functions alone, with a random z, against the per-step references."
    G = () if name == "rnn" else (3,)
    x = rnn_inputs(2, 8, 2, 20, G=G)
    z = x[2]                                                   # any (B, T, H, *G, D) tensor
    xs = [z, *x[4:7], *x[8:]]                                  # z, kr, vr, beta_r, R0, y0 (or h0, c0)
    ref_fn, fn = (rnn_readout_ref, ts.DeltaRNNRecurrenceTriton) if name == "rnn" else (lstm_readout_ref, ts.DeltaLSTMRecurrenceTriton)
    compare(grads(ref_fn, xs), grads(fn.apply, xs, torch.float32, DEV), TOL)

# ---------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 4e-2), (torch.float16, 5e-3)])
@pytest.mark.parametrize("name", ["rdn", "rnn", "lstm"])
def test_half_precision(name, dtype, tol):
    "Half inputs: outputs and gradients keep the input dtype, every state is float32, errors are rounding-sized."
    if name == "rdn": x, f, n_state = rdn_inputs(1, 9, 2, 16), RDN, 2
    elif name == "rnn": x, f, n_state = rnn_inputs(1, 9, 2, 16), RNN, 3
    else: x, f, n_state = rnn_inputs(1, 9, 2, 16, G=(3,)), LSTM, 4
    ref, out = grads(f("naive"), x), grads(f("triton"), x, dtype, DEV)
    assert out[0].dtype == dtype and all(t.dtype == torch.float32 for t in out[1:1 + n_state])
    assert all(t.dtype == dtype for t in out[1 + n_state:])
    compare(ref, out, tol)

# ---------------------------------------------------------------- errors and dispatch

def test_nan_fill_is_on():
    assert ts.new_buffer(3, dtype=torch.float32, device=DEV).isnan().all()

def test_bad_input_raises():
    x = [t.float().to(DEV) for t in rdn_inputs(1, 4, 1, 8)]
    with pytest.raises(ValueError, match="recurrent_delta_rule: the sequential Triton kernels take float32, bfloat16 or float16"):
        recurrent_delta_rule(*[t.double() for t in x[:8]], impl="triton")
    big = [t.float().to(DEV) for t in rnn_inputs(1, 2, 1, 130)[:7]]
    with pytest.raises(ValueError, match="delta_rnn: the sequential Triton kernels take head dims up to 128"):
        delta_rnn(*big, impl="triton")
    big = [t.float().to(DEV) for t in rnn_inputs(1, 2, 1, 130, G=(3,))[:7]]
    with pytest.raises(ValueError, match="delta_lstm: the sequential Triton kernels take head dims up to 128"):
        delta_lstm(*big, impl="triton")

@pytest.mark.parametrize("name", ["rdn", "rnn"])
def test_auto_keeps_a_cpu_path_for_cpu_tensors(name):
    "On CPU tensors `auto` never takes the Triton kernels: the compiled loops of 04c for the RDN where numba is installed, else torch."
    from rfwp.utils import numba_available
    if name == "rdn": x, f = [t.float() for t in rdn_inputs(1, 6, 1, 8)], RDN
    else: x, f = [t.float() for t in rnn_inputs(1, 6, 1, 8)], RNN
    cpu = "numba" if name == "rdn" and numba_available() else "torch"
    compare(flat(f(cpu)(*x)), flat(f("auto")(*x)), 0)

def test_cpu_without_interpreter_says_how():
    "impl='triton' on CPU tensors without TRITON_INTERPRET=1: a ValueError with the hint, for each op."
    code = textwrap.dedent("""
        import torch
        from rfwp.ops.rdn import recurrent_delta_rule
        from rfwp.ops.fastnets import delta_rnn, delta_lstm
        x, b = torch.rand(1, 4, 1, 8), torch.rand(1, 4, 1)
        W, r = torch.rand(1, 8, 8), torch.rand(1, 8)
        x3, b3 = torch.rand(1, 4, 1, 3, 8), torch.rand(1, 4, 1, 3)
        for f in (lambda: recurrent_delta_rule(x, x, x, b, W, W, W, r, impl="triton"),
                  lambda: delta_rnn(x, x, x, b, x, x, b, impl="triton"),
                  lambda: delta_lstm(x3, x3, x3, b3, x3, x3, b3, impl="triton")):
            try: f()
            except ValueError as e: print(e)
            else: print("no error")
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3 and all("set TRITON_INTERPRET=1 to run the kernels on the CPU (slow)" in l for l in lines), r.stdout
    assert [l.split(":")[0] for l in lines] == ["recurrent_delta_rule", "delta_rnn", "delta_lstm"]

# ---------------------------------------------------------------- empty sequences

@pytest.mark.parametrize("state", [True, False])
@pytest.mark.parametrize("name", ["rdn", "rnn", "lstm"])
def test_empty_sequence(name, state):
    "T = 0 with impl='triton': an empty output and the state unchanged (float32), its gradient the identity."
    if name == "rdn": x, f, n_in = rdn_inputs(2, 0, 2, 16), RDN, 8
    else: x, f, n_in = rnn_inputs(2, 0, 2, 16, G=(3,) if name == "lstm" else ()), (LSTM if name == "lstm" else RNN), 7
    x = [t.float().to(DEV) for t in x]
    st = [t.requires_grad_() for t in x[n_in:]] if state else []
    o, *final = f("triton", state)(*x[:n_in], *st)
    assert o.shape == (2, 0, 2, 16) and all(s.dtype == torch.float32 for s in final)
    if state:
        gs = [torch.randn_like(s) for s in final]
        torch.autograd.backward(final, gs)
        for s0, s, g in zip(st, final, gs): assert_close("state", s0, s, 0); assert_close("grad", g, s0.grad, 0)
    else: assert all(not s.any() for s in final)

@pytest.mark.parametrize("name", ["rdn", "rnn", "lstm"])
def test_kernels_take_an_empty_sequence(name):
    "The Triton paths called directly with T = 0."
    if name == "rdn":
        x = [t.float().to(DEV) for t in rdn_inputs(1, 0, 2, 16)]
        o, S, y = ts.triton_recurrent_delta_rule(*x)
        final, st = (S, y), x[8:]
    else:
        x = [t.float().to(DEV) for t in rnn_inputs(1, 0, 2, 16, G=(3,) if name == "lstm" else ())]
        o, final = (ts.triton_delta_lstm if name == "lstm" else ts.triton_delta_rnn)(*x)
        st = x[7:]
    assert o.shape == (1, 0, 2, 16)
    for s0, s in zip(st, final): assert_close("state", s0, s, 0)
