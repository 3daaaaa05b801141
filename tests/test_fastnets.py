"Fast nets (Delta MLP, Delta Delta Net, Delta RNN, Delta LSTM): the PyTorch paths against the per-step references in float64."
import pytest, torch
import rfwp.ops.fastnets as fastnets
from rfwp.ops.fastnets import delta_rnn, delta_lstm, delta_delta, delta_mlp, DeltaRNNRecurrence, DeltaLSTMRecurrence
from rfwp.ops.linear import elu_sumnorm
from rfwp.utils import assert_close
from _helpers import outputs_and_grads

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py

def rnd(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return lambda *s: torch.randn(*s, generator=g, dtype=dtype)

# ---- inputs: a flat list of tensors per op, and a function of that list calling the op

def rnn_inputs(B, T, H, D, state=True, seed=0, gates=False):
    r = rnd(seed)
    s = (B, T, H, 3) if gates else (B, T, H)
    x = [elu_sumnorm(r(*s, D)), elu_sumnorm(r(*s, D)), r(*s, D), torch.sigmoid(r(*s)),
         torch.softmax(r(*s, D), -1), r(*s, D), torch.sigmoid(r(*s))]
    if not state: return x
    M = (B, H, 3, D, D) if gates else (B, H, D, D)
    return x + [0.1 * r(*M), 0.1 * r(*M), r(B, H, D)] + ([r(B, H, D)] if gates else [])

def rnn_fn(impl, state=True):
    return lambda *x: delta_rnn(*x[:7], initial_state=tuple(x[7:]) if state else None, output_final_state=True, impl=impl)

def lstm_fn(impl, state=True):
    return lambda *x: delta_lstm(*x[:7], initial_state=tuple(x[7:]) if state else None, output_final_state=True, impl=impl)

def dd_inputs(B, T, H, D, state=True, seed=0):
    r = rnd(seed)
    x = [elu_sumnorm(r(B, T, H, D)), elu_sumnorm(r(B, T, H, D)), r(B, T, H, 3 * D + 1), torch.sigmoid(r(B, T, H))]
    return x + ([0.1 * r(B, H, D, 3 * D + 1), 0.1 * r(B, H, D, D)] if state else [])

def dd_fn(impl, state=True):
    return lambda *x: delta_delta(*x[:4], initial_state=tuple(x[4:]) if state else None, output_final_state=True, impl=impl)

def mlp_inputs(B, T, H, D, F=None, N=2, state=True, seed=0, ln=True):
    r, F = rnd(seed), F or 2 * D
    ks, vs, bs, S0 = [], [], [], []
    for _ in range(N):
        ks += [elu_sumnorm(r(B, T, H, D)), elu_sumnorm(r(B, T, H, F))]; vs += [r(B, T, H, F), r(B, T, H, D)]
        bs += [torch.sigmoid(r(B, T, H)), torch.sigmoid(r(B, T, H))]; S0 += [0.1 * r(B, H, D, F), 0.1 * r(B, H, F, D)]
    lnp = [1 + 0.1 * r(N, H, D), 0.1 * r(N, D)] if ln else []  # per-head weight, shared bias
    return [r(B, T, H, D), *ks, *vs, *bs, *lnp] + (S0 if state else [])

def mlp_fn(impl, N=2, state=True, ln=True):
    L = 2 * N
    def f(*x):
        q, ks, vs, bs, rest = x[0], x[1:1+L], x[1+L:1+2*L], x[1+2*L:1+3*L], x[1+3*L:]
        w, b, S0 = (rest[0], rest[1], rest[2:]) if ln else (None, None, rest)
        return delta_mlp(q, list(ks), list(vs), list(bs), ln_weight=w, ln_bias=b,
                         initial_state=tuple(S0) if state else None, output_final_state=True, impl=impl)
    return f

OPS = dict(rnn=(rnn_inputs, rnn_fn), lstm=(lambda *a, **k: rnn_inputs(*a, gates=True, **k), lstm_fn),
           dd=(dd_inputs, dd_fn), mlp=(mlp_inputs, mlp_fn))

def check(name, state, shape, tol=1e-10, **kw):
    "torch vs naive: outputs, every final-state part and every input gradient, under random upstream gradients."
    make, fn = OPS[name]
    x = make(*shape, state=state, **kw)
    ref = outputs_and_grads(fn("naive", state=state), x)
    out = outputs_and_grads(fn("torch", state=state), x)
    assert len(ref) == len(out)
    for i, (a, b) in enumerate(zip(ref, out)):
        assert a is not None and b is not None, f"{name}: entry {i} has no gradient"
        assert_close(f"{name} entry {i}", a, b, tol)

SHAPES = [(1, 1, 1, 16), (2, 63, 3, 16), (1, 70, 3, 12), (2, 70, 1, 12)]  # B, T, H, D

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(OPS))
def test_torch_matches_naive(name, shape):
    check(name, True, shape)

@pytest.mark.parametrize("name", list(OPS))
def test_torch_matches_naive_zero_state(name):
    check(name, False, (2, 20, 3, 12))

def test_mlp_depth_one_and_no_layernorm_affine():
    make, fn = OPS["mlp"]
    for N, ln in [(1, True), (3, False)]:
        x = make(2, 30, 2, 8, F=12, N=N, ln=ln)
        for a, b in zip(outputs_and_grads(fn("naive", N=N, ln=ln), x), outputs_and_grads(fn("torch", N=N, ln=ln), x)):
            assert_close("mlp", a, b, 1e-10)

def test_mlp_layernorm_as_list():
    "ln_weight/ln_bias as a list of N tensors (D,) or (H, D) give the same as the stacked tensor."
    x = mlp_inputs(2, 9, 3, 8)
    q, ks, vs, bs, w, b, S0 = x[0], x[1:5], x[5:9], x[9:13], x[13], x[14], x[15:]
    o1, _ = delta_mlp(q, ks, vs, bs, w, b, tuple(S0))
    o2, _ = delta_mlp(q, ks, vs, bs, list(w.unbind(0)), list(b.unbind(0)), tuple(S0))
    assert_close("ln as list", o1, o2, 1e-14)

@pytest.mark.parametrize("name", list(OPS))
def test_long_sequence_in_delta_rule_segments(name, monkeypatch):
    "The chunked delta rule is fed in segments when T > _SEGMENT; the result does not change."
    monkeypatch.setattr(fastnets, "_SEGMENT", 16)
    check(name, True, (1, 70, 2, 8))

@pytest.mark.parametrize("impl", ["naive", "torch"])
@pytest.mark.parametrize("name", list(OPS))
def test_two_segments_equal_one_pass(name, impl):
    make, fn = OPS[name]
    x = make(2, 50, 3, 12)
    T = 50
    o, S = fn(impl)(*x)
    n_state = len(S)
    split = lambda a, b: [t[:, a:b] if t.dim() >= 3 and t.shape[1] == T else t for t in x[:-n_state]]
    o1, S1 = fn(impl)(*split(0, 21), *x[-n_state:])
    o2, S2 = fn(impl)(*split(21, T), *S1)
    assert_close("o", o, torch.cat([o1, o2], 1), 1e-12)
    for i, (a, b) in enumerate(zip(S, S2)): assert_close(f"state[{i}]", a, b, 1e-12)

def test_auto_is_torch():
    x = rnn_inputs(1, 9, 2, 8)
    assert_close("auto", delta_rnn(*x[:7], impl="torch")[0], delta_rnn(*x[:7], impl="auto")[0], 0)

def test_final_state_only_when_asked():
    x = rnn_inputs(1, 5, 2, 8, state=False)
    assert delta_rnn(*x)[1] is None
    S, R, y = delta_rnn(*x, output_final_state=True)[1]
    assert S.shape == R.shape == (1, 2, 8, 8) and y.shape == (1, 2, 8)

def test_half_inputs_computed_in_float32():
    x = [t.float() for t in rnn_inputs(1, 12, 2, 8, state=False)]
    o32, _ = delta_lstm(*[t.float() for t in rnn_inputs(1, 12, 2, 8, state=False, gates=True)])
    o16, _ = delta_lstm(*[t.bfloat16() for t in rnn_inputs(1, 12, 2, 8, state=False, gates=True)])
    assert o16.dtype == torch.bfloat16
    assert_close("bf16 vs fp32", o32, o16.float(), 2e-2)
    o, S = delta_rnn(*[t.bfloat16() for t in x], output_final_state=True)
    assert o.dtype == torch.bfloat16 and S[1].dtype == torch.float32

def test_comparison_can_fail():
    "A wrong recurrence is caught: ignoring the previous output y_0 changes the result."
    x = rnn_inputs(1, 10, 2, 8)
    o, _ = delta_rnn(*x[:7], initial_state=tuple(x[7:]))
    o_wrong, _ = delta_rnn(*x[:7], initial_state=(x[7], x[8], torch.zeros_like(x[9])))
    with pytest.raises(AssertionError): assert_close("o", o, o_wrong, 1e-6)
    # and the Delta RNN is not a Delta Net: the recurrent matrix matters
    o_norec, _ = delta_rnn(*x[:6], torch.zeros_like(x[6]), initial_state=(x[7], torch.zeros_like(x[8]), x[9]))
    with pytest.raises(AssertionError): assert_close("o", o, o_norec, 1e-6)

# ---- gradcheck of the custom autograd Functions

def test_gradcheck_rnn_recurrence():
    r = rnd(3)
    T, N, D = 6, 3, 4
    x = [r(T, N, D), torch.softmax(r(T, N, D), -1), r(T, N, D), torch.sigmoid(r(T, N)), r(N, D, D), r(N, D)]
    assert torch.autograd.gradcheck(DeltaRNNRecurrence.apply, [t.requires_grad_() for t in x])

def test_gradcheck_lstm_recurrence():
    r = rnd(4)
    T, N, D = 5, 2, 3
    x = [r(T, 3, N, D), torch.softmax(r(T, 3, N, D), -1), r(T, 3, N, D), torch.sigmoid(r(T, 3, N)),
         r(3, N, D, D), r(N, D), r(N, D)]
    assert torch.autograd.gradcheck(DeltaLSTMRecurrence.apply, [t.requires_grad_() for t in x])

def test_gradient_through_final_state_only():
    "Upstream gradient on the final state alone (none on the outputs) still reaches every input."
    x = [t.requires_grad_() for t in rnn_inputs(1, 8, 2, 4, gates=True)]
    _, (S, R, h, c) = delta_lstm(*x[:7], initial_state=tuple(x[7:]), output_final_state=True)
    c.sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in x)

# ---- bad input

def rnn_args():
    return rnn_inputs(2, 6, 3, 8)

def test_bad_input_rnn():
    q, k, v, b, kr, vr, br, S0, R0, y0 = rnn_args()
    with pytest.raises(ValueError, match="`q` must have 4 dims"): delta_rnn(q[0], k, v, b, kr, vr, br)
    with pytest.raises(ValueError, match="`kr`"): delta_rnn(q, k, v, b, kr[:, :5], vr, br)
    with pytest.raises(ValueError, match="`v`"): delta_rnn(q, k, v[:1], b, kr, vr, br)
    with pytest.raises(ValueError, match="`vr`"): delta_rnn(q, k, v, b, kr, vr[:, :, :2], br)
    with pytest.raises(ValueError, match="`k`"): delta_rnn(q, k[..., :4], v, b, kr, vr, br)
    with pytest.raises(ValueError, match="`beta` must have 3 dims"): delta_rnn(q, k, v, b[..., None], kr, vr, br)
    with pytest.raises(ValueError, match="`beta_r`"): delta_rnn(q, k, v, b, kr, vr, br[:, :, :1])
    with pytest.raises(TypeError, match="`vr` has dtype"): delta_rnn(q, k, v, b, kr, vr.float(), br)
    with pytest.raises(TypeError, match="`beta_r` is required"): delta_rnn(q, k, v, b, kr, vr, None)
    with pytest.raises(ValueError, match="unknown impl"): delta_rnn(q, k, v, b, kr, vr, br, impl="cuda")
    with pytest.raises(ValueError, match=r"initial_state\[1\]"): delta_rnn(q, k, v, b, kr, vr, br, (S0, R0[:, :, :4], y0))
    with pytest.raises(ValueError, match=r"initial_state\[2\]"): delta_rnn(q, k, v, b, kr, vr, br, (S0, R0, y0[:1]))
    with pytest.raises(TypeError, match=r"initial_state\[0\].*dtype"): delta_rnn(q, k, v, b, kr, vr, br, (S0.float(), R0, y0))
    with pytest.raises(ValueError, match="`initial_state` must have 3 parts"): delta_rnn(q, k, v, b, kr, vr, br, (S0, R0))
    with pytest.raises(TypeError, match="`initial_state` must be None or a tuple"): delta_rnn(q, k, v, b, kr, vr, br, S0)

def test_bad_input_lstm():
    q, k, v, b, kr, vr, br, S0, R0, h0, c0 = rnn_inputs(2, 6, 3, 8, gates=True)
    with pytest.raises(ValueError, match="`q` must have 5 dims"): delta_lstm(q[:, :, :, 0], k, v, b, kr, vr, br)
    with pytest.raises(ValueError, match="`k`"): delta_lstm(q, k[:, :, :, :2], v, b, kr, vr, br)
    with pytest.raises(ValueError, match="`beta` must have 4 dims"): delta_lstm(q, k, v, b[..., 0], kr, vr, br)
    with pytest.raises(ValueError, match="`beta_r`"): delta_lstm(q, k, v, b, kr, vr, br[..., :2])
    with pytest.raises(ValueError, match="`vr`"): delta_lstm(q, k, v, b, kr, vr[:, :3], br)
    with pytest.raises(TypeError, match="`kr` has dtype"): delta_lstm(q, k, v, b, kr.float(), vr, br)
    with pytest.raises(ValueError, match="unknown impl"): delta_lstm(q, k, v, b, kr, vr, br, impl="fast")
    with pytest.raises(ValueError, match=r"initial_state\[1\]"): delta_lstm(q, k, v, b, kr, vr, br, (S0, R0[:, :, 0], h0, c0))
    with pytest.raises(ValueError, match=r"initial_state\[3\]"): delta_lstm(q, k, v, b, kr, vr, br, (S0, R0, h0, c0[..., :3]))
    with pytest.raises(ValueError, match="`initial_state` must have 4 parts"): delta_lstm(q, k, v, b, kr, vr, br, (S0, R0, h0))

def test_bad_input_delta_delta():
    q, k, v, b, S1, S2 = dd_inputs(2, 6, 3, 8)
    with pytest.raises(ValueError, match="`v`"): delta_delta(q, k, v[..., :-1], b)
    with pytest.raises(ValueError, match="`q` must have 4 dims"): delta_delta(q[0], k, v, b)
    with pytest.raises(ValueError, match="`k`"): delta_delta(q, k[:, :, :2], v, b)
    with pytest.raises(ValueError, match="`beta`"): delta_delta(q, k, v, b[:, :3])
    with pytest.raises(TypeError, match="`beta` has dtype"): delta_delta(q, k, v, b.float())
    with pytest.raises(ValueError, match="unknown impl"): delta_delta(q, k, v, b, impl="x")
    with pytest.raises(ValueError, match=r"initial_state\[0\]"): delta_delta(q, k, v, b, (S2, S2))
    with pytest.raises(ValueError, match=r"initial_state\[1\]"): delta_delta(q, k, v, b, (S1, S1))

def test_bad_input_mlp():
    x = mlp_inputs(2, 6, 3, 8)
    q, ks, vs, bs, w, b, S0 = x[0], x[1:5], x[5:9], x[9:13], x[13], x[14], x[15:]
    with pytest.raises(ValueError, match="`ks` must hold 2N"): delta_mlp(q, ks[:3], vs[:3], bs[:3])
    with pytest.raises(ValueError, match="`ks` must hold 2N"): delta_mlp(q, [], [], [])
    with pytest.raises(ValueError, match="`vs` holds 2"): delta_mlp(q, ks, vs[:2], bs)
    with pytest.raises(ValueError, match="`betas` holds 3"): delta_mlp(q, ks, vs, bs[:3])
    with pytest.raises(TypeError, match="`ks` must be a list"): delta_mlp(q, ks[0], vs, bs)
    with pytest.raises(ValueError, match=r"`vs\[1\]`"): delta_mlp(q, ks, [vs[0], vs[0], vs[2], vs[3]], bs)
    with pytest.raises(ValueError, match=r"`ks\[3\]`"): delta_mlp(q, [ks[0], ks[1], ks[2], ks[2]], vs, bs)
    with pytest.raises(ValueError, match=r"`betas\[2\]`"): delta_mlp(q, ks, vs, [bs[0], bs[1], bs[2][:1], bs[3]])
    with pytest.raises(ValueError, match="`q` must have 4 dims"): delta_mlp(q[0], ks, vs, bs)
    with pytest.raises(TypeError, match=r"`vs\[2\]` has dtype"): delta_mlp(q, ks, [vs[0], vs[1], vs[2].float(), vs[3]], bs)
    with pytest.raises(ValueError, match="`ln_weight`"): delta_mlp(q, ks, vs, bs, ln_weight=w[:1])
    with pytest.raises(ValueError, match="`ln_bias` must hold N=2"): delta_mlp(q, ks, vs, bs, ln_bias=[b[0]])
    with pytest.raises(ValueError, match=r"`ln_weight\[1\]`"): delta_mlp(q, ks, vs, bs, ln_weight=[w[0], w[1, :, :4]])
    with pytest.raises(ValueError, match="`initial_state` must have 4 parts"): delta_mlp(q, ks, vs, bs, initial_state=tuple(S0[:2]))
    with pytest.raises(ValueError, match=r"initial_state\[1\]"): delta_mlp(q, ks, vs, bs, initial_state=(S0[0], S0[0], S0[2], S0[3]))
    with pytest.raises(ValueError, match="unknown impl"): delta_mlp(q, ks, vs, bs, impl="cuda")

# ---- empty sequences (T = 0)

N_STATE = dict(rnn=3, lstm=4, dd=2, mlp=4)   # parts of each op's state

@pytest.mark.parametrize("impl", ["naive", "torch"])
@pytest.mark.parametrize("state", [True, False])
@pytest.mark.parametrize("name", list(OPS))
def test_empty_sequence(name, impl, state):
    "T = 0: an empty (B, 0, H, D) output and every state part unchanged (zeros without one), gradients the identity."
    make, fn = OPS[name]
    B, H, D = 2, 3, 5
    x = make(B, 0, H, D, state=state)
    n_state = N_STATE[name] if state else 0
    xs = [t.clone().requires_grad_() if i >= len(x) - n_state else t for i, t in enumerate(x)]
    o, final = fn(impl, state=state)(*xs)
    assert o.shape == (B, 0, H, D) and o.dtype == torch.float64
    assert isinstance(final, tuple) and len(final) == N_STATE[name]
    if state:
        S0s = xs[len(x) - n_state:]
        gs = [torch.randn_like(s) for s in final]
        torch.autograd.backward(list(final), gs)
        for i, (s0, s, g) in enumerate(zip(S0s, final, gs)):
            assert s is not s0
            assert_close(f"{name} state[{i}]", s0, s, 0); assert_close(f"{name} d state[{i}]", g, s0.grad, 0)
    else:
        for s in final: assert s.shape[:2] == (B, H) and s.dtype == torch.float64 and not s.any()

def test_empty_sequence_no_final_state_and_half():
    x = rnn_inputs(1, 0, 2, 4)
    assert delta_rnn(*x[:7], initial_state=tuple(x[7:]))[1] is None
    h = [t.half() for t in x]
    o, (S, R, y) = delta_rnn(*h[:7], initial_state=tuple(h[7:]), output_final_state=True)
    assert o.dtype == torch.float16 and S.dtype == R.dtype == y.dtype == torch.float32
    assert_close("R", h[8].float(), R, 0)

def test_empty_sequence_bad_input_still_raises():
    x = rnn_inputs(1, 0, 2, 4)
    with pytest.raises(ValueError, match="`vr`"): delta_rnn(*x[:5], torch.zeros(1, 1, 2, 4, dtype=torch.float64), x[6])
    with pytest.raises(ValueError, match="initial_state"): delta_rnn(*x[:7], initial_state=(None, None))
    xl = rnn_inputs(1, 0, 2, 4, gates=True)
    with pytest.raises(ValueError, match="`q` must have 5 dims"): delta_lstm(*x[:7])
    with pytest.raises(ValueError, match=r"initial_state\[2\]"): delta_lstm(*xl[:7], initial_state=(None, None, xl[9][..., :3], None))
    xd = dd_inputs(1, 0, 2, 4)
    with pytest.raises(ValueError, match="`v` has shape"): delta_delta(xd[0], xd[1], xd[0], xd[3])

@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_loops_use_the_shared_thread_policy(name, monkeypatch):
    "The recurrent read-outs run forward and backward on one thread when a step is small (rfwp.utils.serial_if_small)."
    import rfwp.utils
    make, fn = OPS[name]
    x = make(1, 5, 2, 4)
    torch.set_num_threads(2)
    calls, set_threads = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), set_threads(n))[1])
    out = outputs_and_grads(fn("torch"), x)
    assert calls == [1, 2, 1, 2] and torch.get_num_threads() == 2
    calls.clear(); monkeypatch.setattr(rfwp.utils, "SERIAL_STEP_SIZE", 0)   # off: no thread change, same numbers
    for a, b in zip(out, outputs_and_grads(fn("torch"), x)): assert_close(name, a, b, 1e-13)
    assert calls == []
    set_threads(1)

# ---- the Delta RNN with the gated delta rule (decay g) and β in (0, 2) on its feedforward fast matrix

def rnn_g_inputs(B, T, H, D, state=True, seed=0):
    x = rnn_inputs(B, T, H, D, state=state, seed=seed)
    x[3] = 2 * x[3]                                                     # β in (0, 2)
    return x + [-2 * torch.rand(B, T, H, generator=torch.Generator().manual_seed(seed + 5), dtype=torch.float64)]

def rnn_g_fn(impl, state=True):
    return lambda *x: delta_rnn(*x[:7], initial_state=tuple(x[7:-1]) if state else None, output_final_state=True, impl=impl, g=x[-1])

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("state", [True, False])
def test_gated_rnn_matches_naive(shape, state, monkeypatch):
    if shape[1] == 70: monkeypatch.setattr(fastnets, "_SEGMENT", 16)    # also through the segmented chunked delta rule
    x = rnn_g_inputs(*shape, state=state)
    ref, out = outputs_and_grads(rnn_g_fn("naive", state), x), outputs_and_grads(rnn_g_fn("torch", state), x)
    assert len(ref) == len(out)
    for i, (a, b) in enumerate(zip(ref, out)):
        assert a is not None and b is not None, f"entry {i} has no gradient"
        assert_close(f"gated rnn entry {i}", a, b, 1e-10)

def test_gated_rnn_reduces_to_plain_and_bad_g():
    x = rnn_inputs(2, 30, 2, 8)
    plain, _ = delta_rnn(*x[:7], tuple(x[7:]))
    zero, _ = delta_rnn(*x[:7], tuple(x[7:]), g=torch.zeros(2, 30, 2, dtype=torch.float64))
    assert_close("g=0", plain, zero, 1e-12)
    decayed, _ = delta_rnn(*x[:7], tuple(x[7:]), g=-torch.ones(2, 30, 2, dtype=torch.float64))
    with pytest.raises(AssertionError): assert_close("decay", plain, decayed, 1e-6)
    with pytest.raises(ValueError, match="`g` must have 3 dims"): delta_rnn(*x[:7], g=torch.zeros(2, 30, 2, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="`g` has dtype"): delta_rnn(*x[:7], g=torch.zeros(2, 30, 2))

# ---- the decay g and β in (0, 2) on the Delta MLP (every fast matrix), the Delta Delta Net (S1) and the Delta LSTM (S, per gate net)

def _decay(shape, seed):
    return -2 * torch.rand(*shape, generator=torch.Generator().manual_seed(seed + 5), dtype=torch.float64)

def gated_case(name, B, T, H, D, state=True, seed=0):
    "Inputs (βs doubled into (0, 2), a random decay last) and the op as a function of them with `g`."
    if name == "mlp":
        x = mlp_inputs(B, T, H, D, state=state, seed=seed); L = 4
        for j in range(1 + 2 * L, 1 + 3 * L): x[j] = 2 * x[j]
        f = lambda impl: (lambda *a: _mlp_g(impl, state, a))
        return x + [_decay((B, T, H), seed)], f
    if name == "dd":
        x = dd_inputs(B, T, H, D, state=state, seed=seed); x[3] = 2 * x[3]
        f = lambda impl: (lambda *a: delta_delta(*a[:4], initial_state=tuple(a[4:-1]) if state else None, output_final_state=True, impl=impl, g=a[-1]))
        return x + [_decay((B, T, H), seed)], f
    x = rnn_inputs(B, T, H, D, state=state, seed=seed, gates=True); x[3] = 2 * x[3]
    f = lambda impl: (lambda *a: delta_lstm(*a[:7], initial_state=tuple(a[7:-1]) if state else None, output_final_state=True, impl=impl, g=a[-1]))
    return x + [_decay((B, T, H, 3), seed)], f

def _mlp_g(impl, state, a, L=4):
    q, ks, vs, bs, w, b, S0 = a[0], a[1:1+L], a[1+L:1+2*L], a[1+2*L:1+3*L], a[1+3*L], a[2+3*L], a[3+3*L:-1]
    return delta_mlp(q, list(ks), list(vs), list(bs), ln_weight=w, ln_bias=b, initial_state=tuple(S0) if state else None,
                     output_final_state=True, impl=impl, g=a[-1])

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["mlp", "dd", "lstm"])
def test_gated_fastnets_match_naive(name, shape, monkeypatch):
    if shape[1] == 70: monkeypatch.setattr(fastnets, "_SEGMENT", 16)    # also through the segmented chunked delta rule
    for state in (True, False):
        x, f = gated_case(name, *shape, state=state)
        ref, out = outputs_and_grads(f("naive"), x), outputs_and_grads(f("torch"), x)
        assert len(ref) == len(out) and out[-1] is not None             # the gradient of g
        for i, (a, b) in enumerate(zip(ref, out)):
            assert a is not None and b is not None, f"{name}: entry {i} has no gradient"
            assert_close(f"gated {name} entry {i}", a, b, 1e-10)

@pytest.mark.parametrize("name", ["mlp", "dd", "lstm"])
def test_gated_fastnets_reduce_to_plain_and_bad_g(name):
    x, f = gated_case(name, 2, 30, 2, 8)
    plain_fn = dict(mlp=mlp_fn("torch"), dd=dd_fn("torch"), lstm=lstm_fn("torch"))[name]
    plain = plain_fn(*x[:-1])[0]
    assert_close(f"{name} g=0", plain, f("torch")(*x[:-1], torch.zeros_like(x[-1]))[0], 1e-12)
    decayed = f("torch")(*x[:-1], -torch.ones_like(x[-1]))[0]
    with pytest.raises(AssertionError): assert_close("decay", plain, decayed, 1e-6)
    with pytest.raises(ValueError, match="`g` must have"): f("torch")(*x[:-1], x[-1][..., None])
    with pytest.raises(TypeError, match="`g` has dtype"): f("torch")(*x[:-1], x[-1].float())

def test_gated_auto_is_torch():
    "impl='auto' with a decay stays on the torch path (the gated Triton kernel is checked in tests/test_triton_seq.py)."
    x, f = gated_case("lstm", 1, 4, 1, 4)
    assert_close("auto", f("torch")(*x)[0], f("auto")(*x)[0], 0)
