"The Recurrent Delta Net: the reversal-backward PyTorch path against the per-step reference in float64."
import pytest, torch
import rfwp.utils
from rfwp.ops.rdn import (recurrent_delta_rule, recurrent_delta_rule_naive, recurrent_delta_rule_torch,
                          RecurrentDeltaRuleFn, init_rdn_weights, serial_if_small)
from rfwp.utils import assert_close, rel_err, numba_available, numba_module
from _helpers import leaves

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py
IMPLS = ["torch", *(["numba"] if numba_available() else [])]   # the fast paths on the CPU

NAMES = "o S_T y_T dxq dxk dxv dxb dR_q dR_k dR_v dr_b dS0 dy0".split()

def inputs(B, T, H, D, dtype=torch.float64, seed=0, state=True):
    "xq, xk, xv, xb, R_q, R_k, R_v, r_b, S0, y0 (S0, y0 zero when not `state`)."
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    S0, y0 = (0.3 * r(B, H, D, D), r(B, H, D)) if state else (torch.zeros(B, H, D, D, dtype=torch.float64), torch.zeros(B, H, D, dtype=torch.float64))
    x = [r(B, T, H, D), r(B, T, H, D), r(B, T, H, D), r(B, T, H), *init_rdn_weights(H, D, g, torch.float64), S0, y0]
    return [t.to(dtype) for t in x]

def outputs_and_grads(fn, x, seed=1):
    """`fn(*leaves)` -> its three outputs (o, S_T, y_T) and the gradient of every input, for a random
    upstream gradient on every output (drawn in float64, so that different dtypes see the same one)."""
    xs = leaves(*x)
    outs = list(fn(*xs))
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum() for o in outs)
    loss.backward()
    return outs + [t.grad for t in xs]

def op(impl):
    "The public op with the state unpacked, as a function of the ten tensors."
    def f(*a):
        o, (S, y) = recurrent_delta_rule(*a[:8], initial_state=(a[8], a[9]), output_final_state=True, impl=impl)
        return o, S, y
    return f

SHAPES = [(1, 1, 1, 16), (2, 63, 3, 16), (1, 63, 1, 60), (2, 20, 3, 60), (3, 17, 2, 8), (2, 1, 3, 4)]

@pytest.mark.parametrize("B,T,H,D", SHAPES)
@pytest.mark.parametrize("state", [True, False])
def test_torch_matches_naive(B, T, H, D, state):
    x = inputs(B, T, H, D, state=state)
    ref = outputs_and_grads(op("naive"), x)
    for impl in IMPLS:
        for name, a, b in zip(NAMES, ref, outputs_and_grads(op(impl), x)): assert_close(f"{impl} {name}", a, b, 1e-10)

def test_function_matches_naive_directly():
    x = inputs(2, 30, 3, 12)
    ref, out = outputs_and_grads(recurrent_delta_rule_naive, x), outputs_and_grads(recurrent_delta_rule_torch, x)
    for name, a, b in zip(NAMES, ref, out): assert_close(name, a, b, 1e-11)

def test_auto_on_cpu_is_the_compiled_loop_where_numba_is():
    x = inputs(1, 9, 2, 8)
    want = "numba" if numba_available() else "torch"
    assert_close("auto", recurrent_delta_rule(*x[:8], impl=want)[0], recurrent_delta_rule(*x[:8], impl="auto")[0], 0)
    g = -torch.rand(1, 9, 2, dtype=torch.float64)                      # a decay: the torch path (the loops take none yet)
    assert_close("auto, g", recurrent_delta_rule(*x[:8], impl="torch", g=g)[0], recurrent_delta_rule(*x[:8], impl="auto", g=g)[0], 0)

@pytest.mark.skipif(not numba_available(), reason="numba is not installed (pip install 'rfwp[cpu]')")
def test_numba_gradcheck_and_refusals():
    x = [t.requires_grad_() for t in inputs(2, 5, 2, 3, seed=3)]
    assert torch.autograd.gradcheck(lambda *a: numba_module().numba_recurrent_delta_rule(*a, 1.7), x)
    with pytest.raises(ValueError, match="impl='numba' does not take a decay"):
        recurrent_delta_rule(*x[:8], impl="numba", g=-torch.rand(2, 5, 2, dtype=torch.float64))

def test_comparison_can_fail():
    "A backward that drops the feedback through h = tanh(y_{t-1}) is detected."
    def no_feedback(*a):
        S, y, outs = a[8], a[9], []
        for t in range(a[0].shape[1]):
            o, S, y = recurrent_delta_rule_naive(*[z[:, t:t+1] for z in a[:4]], *a[4:8], S, y.detach())
            outs.append(o)
        return torch.cat(outs, 1), S, y
    x = inputs(1, 12, 1, 6)
    ref, wrong = outputs_and_grads(recurrent_delta_rule_torch, x), outputs_and_grads(no_feedback, x)
    assert_close("o", ref[0], wrong[0], 1e-12)                    # same forward …
    with pytest.raises(AssertionError, match="dxq"): assert_close("dxq", ref[3], wrong[3], 1e-6)   # … other gradient

def test_feedback_matters():
    "With the recurrent weights set to zero the output changes: the feedback path is live."
    x = inputs(1, 20, 2, 8)
    o, _ = recurrent_delta_rule(*x[:8])
    o0, _ = recurrent_delta_rule(*x[:4], *[torch.zeros_like(w) for w in x[4:8]])
    assert rel_err(o, o0) > 1e-2

@pytest.mark.parametrize("impl", ["naive", *IMPLS])
def test_two_segments_equal_one_pass(impl):
    x = inputs(2, 41, 3, 16)
    def two(*a, t1=17):
        o1, st = recurrent_delta_rule(*[z[:, :t1] for z in a[:4]], *a[4:8], initial_state=(a[8], a[9]), output_final_state=True, impl=impl)
        o2, (S, y) = recurrent_delta_rule(*[z[:, t1:] for z in a[:4]], *a[4:8], initial_state=st, output_final_state=True, impl=impl)
        return torch.cat([o1, o2], 1), S, y
    for name, a, b in zip(NAMES, outputs_and_grads(op(impl), x), outputs_and_grads(two, x)): assert_close(name, a, b, 1e-11)

def test_gradcheck():
    for shape in [(2, 5, 2, 3), (1, 7, 1, 4), (3, 1, 2, 2)]:
        x = [t.requires_grad_() for t in inputs(*shape)]
        assert torch.autograd.gradcheck(RecurrentDeltaRuleFn.apply, x)

def test_backward_twice_on_one_graph():
    "The backward restores the fast weights in its own copy, so a retained graph gives the same gradients again."
    x = leaves(*inputs(2, 9, 2, 5))
    o, S, y = recurrent_delta_rule_torch(*x)
    g1 = torch.autograd.grad((o.sum(), S.sum(), y.sum()), x, retain_graph=True)
    g2 = torch.autograd.grad((o.sum(), S.sum(), y.sum()), x)
    for a, b in zip(g1, g2): assert_close("again", a, b, 0)

def test_saves_only_per_step_vectors():
    "What the forward keeps for the backward is O(T·D) per head (5D + 1 per step), never a per-step state."
    B, T, H, D = 2, 200, 3, 16
    o, S, y = recurrent_delta_rule_torch(*leaves(*inputs(B, T, H, D)))
    ctx = o.grad_fn
    kept = sum(t.numel() for t in ctx.saved if t is not None) + ctx.S_T.numel()
    assert kept <= (5 * D + 1) * T * B * H + B * H * D * D
    assert kept < T * B * H * D * D / 2

def test_long_sequence_fp32():
    "T = 16384 in float32: finite, and outputs, final state and gradients close to a float64 run."
    x64 = inputs(1, 16384, 2, 16, seed=3, state=False)
    r64 = outputs_and_grads(op("torch"), x64)
    r32 = outputs_and_grads(op("torch"), [t.float() for t in x64])
    for name, a, b in zip(NAMES, r64, r32):
        assert torch.isfinite(b).all(), name
        assert rel_err(a, b) < 1e-4, (name, rel_err(a, b))

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_computed_in_fp32(dtype):
    x = inputs(1, 33, 2, 16, dtype=torch.float32)
    xh = [t.to(dtype) for t in x]
    ref, _ = recurrent_delta_rule(*[t.float() for t in xh[:8]])
    o, (S, y) = recurrent_delta_rule(*xh[:8], initial_state=(xh[8], xh[9]), output_final_state=True)
    assert o.dtype == dtype and S.dtype == torch.float32 and y.dtype == torch.float32
    o2, _ = recurrent_delta_rule(*xh[:8])
    assert rel_err(ref, o2.float()) < 2e-2

def test_state_defaults():
    x = inputs(2, 6, 2, 4, state=False)
    o, st = recurrent_delta_rule(*x[:8])
    assert st is None and o.shape == (2, 6, 2, 4)
    o1, _ = recurrent_delta_rule(*x[:8], initial_state=(None, None))
    o2, _ = recurrent_delta_rule(*x[:8], initial_state=(x[8], None))
    assert_close("zeros", o, o1, 0); assert_close("zeros", o, o2, 0)

def test_init_rdn_weights():
    R_q, R_k, R_v, r_b = init_rdn_weights(4, 64, torch.Generator().manual_seed(0))
    assert R_q.shape == (4, 64, 64) and r_b.shape == (4, 64)
    assert abs(torch.cat([R_q.flatten(), R_k.flatten(), R_v.flatten()]).std().item() - 1 / 8) < 0.005

def test_thread_count_restored(monkeypatch):
    torch.set_num_threads(2); n0 = 2
    x = inputs(1, 8, 2, 4)
    out = outputs_and_grads(op("torch"), x)
    assert torch.get_num_threads() == n0
    monkeypatch.setattr(rfwp.utils, "SERIAL_STEP_SIZE", 0)           # no thread change: same numbers
    for name, a, b in zip(NAMES, out, outputs_and_grads(op("torch"), x)): assert_close(name, a, b, 1e-13)
    with pytest.raises(RuntimeError):
        with serial_if_small(1): raise RuntimeError("inside")
    assert torch.get_num_threads() == n0
    torch.set_num_threads(1)

B_, T_, H_, D_ = 2, 9, 3, 4
def _bad(**kw):
    xq, xk, xv, xb, R_q, R_k, R_v, r_b, S0, y0 = inputs(B_, T_, H_, D_)
    a = dict(xq=xq, xk=xk, xv=xv, xb=xb, R_q=R_q, R_k=R_k, R_v=R_v, r_b=r_b)
    a.update({k: (v(a, S0, y0) if callable(v) else v) for k, v in kw.items()})
    return a

@pytest.mark.parametrize("kw,match,exc", [
    (dict(xq=lambda a, S, y: a['xq'][0]), "`xq` must have 4 dims", ValueError),
    (dict(xv=lambda a, S, y: a['xv'][None]), "`xv` must have 4 dims", ValueError),
    (dict(xk=lambda a, S, y: a['xk'][:1]), r"`xk` has shape .* B=1 does not match B=2", ValueError),
    (dict(xv=lambda a, S, y: a['xv'][:, :5]), r"`xv` .* T=5 does not match T=9", ValueError),
    (dict(xk=lambda a, S, y: a['xk'][:, :, :2]), r"`xk` .* H=2 does not match H=3", ValueError),
    (dict(xv=lambda a, S, y: a['xv'][..., :3]), r"`xv` .* D=3 does not match D=4", ValueError),
    (dict(xb=lambda a, S, y: a['xb'][..., None]), "`xb` must have 3 dims", ValueError),
    (dict(xb=lambda a, S, y: a['xb'][:, :4]), r"`xb` .* T=4 does not match T=9", ValueError),
    (dict(R_q=lambda a, S, y: a['R_q'][:, :3]), r"`R_q` .* D=3 does not match D=4", ValueError),
    (dict(R_q=lambda a, S, y: a['R_q'][:2]), r"`R_q` .* H=2 does not match H=3", ValueError),
    (dict(R_v=lambda a, S, y: a['R_v'][0]), "`R_v` must have 3 dims", ValueError),
    (dict(r_b=lambda a, S, y: a['r_b'][:, :, None]), "`r_b` must have 2 dims", ValueError),
    (dict(xk=lambda a, S, y: a['xk'].float()), "`xk` has dtype torch.float32", TypeError),
    (dict(R_k=lambda a, S, y: a['R_k'].float()), "`R_k` has dtype torch.float32", TypeError),
    (dict(xq=lambda a, S, y: a['xq'].long()), "`xq` has dtype torch.int64", TypeError),
    (dict(xb="beta"), "`xb` must be a torch.Tensor", TypeError),
    (dict(impl="cuda"), "unknown impl='cuda'", ValueError),
    (dict(impl="triton"), "recurrent_delta_rule: .*use impl='torch'", ValueError),   # float64 (or CPU without the interpreter)
    (dict(initial_state=lambda a, S, y: S), "`initial_state` must be a pair", TypeError),
    (dict(initial_state=lambda a, S, y: (S, y, y)), "`initial_state` must be a pair .* length 3", TypeError),
    (dict(initial_state=lambda a, S, y: (S[:, :, :2], y)), r"`initial_state\[0\] \(S\)` .* D=2 does not match D=4", ValueError),
    (dict(initial_state=lambda a, S, y: (S[0], y)), r"`initial_state\[0\] \(S\)` must have 4 dims", ValueError),
    (dict(initial_state=lambda a, S, y: (S, y[:1])), r"`initial_state\[1\] \(y_prev\)` .* B=1 does not match B=2", ValueError),
    (dict(initial_state=lambda a, S, y: (S, y[..., None])), r"`initial_state\[1\] \(y_prev\)` must have 3 dims", ValueError),
    (dict(initial_state=lambda a, S, y: (S.float(), y)), r"`initial_state\[0\] \(S\)` has dtype torch.float32", TypeError),
])
def test_bad_input(kw, match, exc):
    with pytest.raises(exc, match=match): recurrent_delta_rule(**_bad(**kw))

@pytest.mark.parametrize("impl", ["naive", *IMPLS])
def test_zero_steps_returns_initial_state(impl):
    x = inputs(2, 0, 3, 4)
    o, (S, y) = recurrent_delta_rule(*x[:8], initial_state=(x[8], x[9]), output_final_state=True, impl=impl)
    assert o.shape == (2, 0, 3, 4)
    assert_close("S", x[8], S, 0); assert_close("y", x[9], y, 0)

@pytest.mark.parametrize("impl", ["naive", "torch"])
@pytest.mark.parametrize("parts", ["both", "S", "y", "none"])
def test_empty_sequence(impl, parts):
    "T = 0: an empty output, (S, y) unchanged (zeros for a missing part), gradients to the initial state the identity."
    x = inputs(2, 0, 3, 5)
    S0, y0 = x[8].clone().requires_grad_(), x[9].clone().requires_grad_()
    st = dict(both=(S0, y0), S=(S0, None), y=(None, y0), none=None)[parts]
    o, (S, y) = recurrent_delta_rule(*x[:8], initial_state=st, output_final_state=True, impl=impl)
    assert o.shape == (2, 0, 3, 5) and o.dtype == torch.float64
    gS, gy = torch.randn_like(S), torch.randn_like(y)
    outs = [(t, g) for t, g in ((S, gS), (y, gy)) if t.requires_grad]
    if outs: torch.autograd.backward(*map(list, zip(*outs)))
    for given, ref, out, g in ((parts in ("both", "S"), S0, S, gS), (parts in ("both", "y"), y0, y, gy)):
        if given: assert_close("state", ref, out, 0); assert_close("grad", g, ref.grad, 0)
        else: assert not out.any() and out.shape == ref.shape
    assert recurrent_delta_rule(*x[:8], initial_state=st, impl=impl)[1] is None

def test_empty_sequence_half_and_bad_input():
    x = inputs(1, 0, 2, 4, dtype=torch.bfloat16)
    o, (S, y) = recurrent_delta_rule(*x[:8], initial_state=(x[8], x[9]), output_final_state=True)
    assert o.dtype == torch.bfloat16 and S.dtype == y.dtype == torch.float32
    a = _bad()
    a.update(xq=a['xq'][:, :0], xk=a['xk'][:, :0], xv=a['xv'][:, :0], xb=a['xb'][:, :0])
    recurrent_delta_rule(**a)                                             # fine
    with pytest.raises(ValueError, match=r"`xv` .* T=9 does not match T=0"): recurrent_delta_rule(**{**a, 'xv': _bad()['xv']})
    with pytest.raises(ValueError, match="`R_q`"): recurrent_delta_rule(**{**a, 'R_q': a['R_q'][:, :3]})
    with pytest.raises(TypeError, match="`initial_state` must be a pair"): recurrent_delta_rule(**a, initial_state=a['R_q'])

# ---- β in (0, 2): beta_range scales σ inside the op; the reversal backward subtracts the stored write, so it still applies

@pytest.mark.parametrize("B,T,H,D", [(1, 1, 1, 3), (2, 37, 3, 12), (1, 70, 2, 5)])
@pytest.mark.parametrize("state", [True, False])
def test_beta_range_two_matches_naive(B, T, H, D, state):
    x = inputs(B, T, H, D, state=state)
    def f(impl):
        def g(*a):
            o, (S, y) = recurrent_delta_rule(*a[:8], initial_state=(a[8], a[9]), output_final_state=True, impl=impl, beta_range=2.0)
            return o, S, y
        return g
    ref = outputs_and_grads(f("naive"), x)
    for impl in IMPLS:
        for n, a, b in zip(NAMES, ref, outputs_and_grads(f(impl), x)): assert_close(f"{impl} beta_range=2 {n}", a, b, 1e-10)

def test_beta_range_gradcheck_and_reduction():
    x = [t.requires_grad_() for t in inputs(2, 5, 2, 3, seed=4)]
    assert torch.autograd.gradcheck(lambda *a: RecurrentDeltaRuleFn.apply(*a, 1.7), x)
    x = inputs(2, 20, 2, 6)
    plain = recurrent_delta_rule(*x[:8], initial_state=(x[8], x[9]))[0]
    assert torch.equal(plain, recurrent_delta_rule(*x[:8], initial_state=(x[8], x[9]), beta_range=1.0)[0])
    assert (plain - recurrent_delta_rule(*x[:8], initial_state=(x[8], x[9]), beta_range=2.0)[0]).abs().max() > 1e-3
    for bad in (0, -1.0, 2.5, True, "2"):
        with pytest.raises(ValueError, match="`beta_range` must be a number in"): recurrent_delta_rule(*x[:8], beta_range=bad)

def test_beta_range_fp32_long():
    "fp32 at T = 2048 with β up to 2: the reversal stays within 1e-3 of float64 (outputs, states, gradients)."
    x64 = inputs(1, 2048, 2, 16, state=False)
    f = lambda *a: RecurrentDeltaRuleFn.apply(*a, 2.0)
    ref, out = outputs_and_grads(f, x64), outputs_and_grads(f, [t.float() for t in x64])
    for n, a, b in zip(NAMES, ref, out): assert_close(f"fp32 {n}", a, b.double(), 1e-3)

# ---- a decay g (log α): the forward keeps S every ⌈√T⌉ steps, the backward replays each segment (no division by α)

def decay(B, T, H, lo=3.0, seed=7, dtype=torch.float64):
    "Log decays in [-lo, 0]: α from e^-lo to 1."
    return (-lo * torch.rand(B, T, H, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)).to(dtype)

def op_g(impl, beta_range=1.0):
    "The public op as a function of the ten tensors and g."
    def f(*a):
        o, (S, y) = recurrent_delta_rule(*a[:8], initial_state=(a[8], a[9]), output_final_state=True, impl=impl,
                                         beta_range=beta_range, g=a[10])
        return o, S, y
    return f

@pytest.mark.parametrize("B,T,H,D", [(1, 1, 1, 3), (2, 37, 3, 12), (1, 70, 2, 5), (2, 16, 1, 4)])
@pytest.mark.parametrize("state", [True, False])
@pytest.mark.parametrize("beta_range", [1.0, 2.0])
def test_decay_matches_naive(B, T, H, D, state, beta_range):
    x = inputs(B, T, H, D, state=state) + [decay(B, T, H)]
    ref, out = outputs_and_grads(op_g("naive", beta_range), x), outputs_and_grads(op_g("torch", beta_range), x)
    for n, a, b in zip(NAMES + ["dg"], ref, out): assert_close(f"decay {n}", a, b, 1e-10)

def test_decay_gradcheck():
    for shape in [(2, 5, 2, 3), (1, 10, 1, 2)]:                    # T = 10: segments of 4, 4, 2
        x = [t.requires_grad_() for t in inputs(*shape) + [decay(*shape[:3], seed=3)]]
        assert torch.autograd.gradcheck(lambda *a: RecurrentDeltaRuleFn.apply(*a[:10], 1.5, a[10]), x)

def test_decay_zero_is_the_plain_op_and_a_decay_matters():
    x = inputs(2, 23, 2, 6)
    plain = outputs_and_grads(op("torch"), x)
    zero = outputs_and_grads(op_g("torch"), x + [torch.zeros(2, 23, 2, dtype=torch.float64)])
    for n, a, b in zip(NAMES, plain, zero): assert_close(f"g = 0 {n}", a, b, 1e-12)
    assert (plain[0] - op_g("torch")(*x, decay(2, 23, 2))[0]).abs().max() > 1e-3

def test_decay_two_segments_equal_one_pass():
    x = inputs(2, 41, 3, 8) + [decay(2, 41, 3)]
    def two(*a, t1=17):
        cut = lambda z, s: z[:, s]
        o1, st = recurrent_delta_rule(*[cut(z, slice(None, t1)) for z in a[:4]], *a[4:8], initial_state=(a[8], a[9]),
                                      output_final_state=True, g=a[10][:, :t1])
        o2, (S, y) = recurrent_delta_rule(*[cut(z, slice(t1, None)) for z in a[:4]], *a[4:8], initial_state=st,
                                          output_final_state=True, g=a[10][:, t1:])
        return torch.cat([o1, o2], 1), S, y
    for n, a, b in zip(NAMES + ["dg"], outputs_and_grads(op_g("torch"), x), outputs_and_grads(two, x)): assert_close(n, a, b, 1e-11)

def test_decay_fp32_strong_decay_stays_finite():
    "α down to e^-60 (where undoing a step by dividing by α would overflow fp32): fp32 within 1e-4 of float64 at T = 600."
    x64 = inputs(1, 600, 2, 8) + [decay(1, 600, 2, lo=60.0)]
    f = lambda *a: RecurrentDeltaRuleFn.apply(*a[:10], 2.0, a[10])
    ref, out = outputs_and_grads(f, x64), outputs_and_grads(f, [t.float() for t in x64])
    assert all(torch.isfinite(t).all() for t in out)
    for n, a, b in zip(NAMES + ["dg"], ref, out): assert_close(f"fp32 {n}", a, b.double(), 1e-4)

def test_decay_keeps_about_sqrt_T_states():
    B, T, H, D = 1, 400, 2, 8
    o, S, y = recurrent_delta_rule_torch(*leaves(*inputs(B, T, H, D)), 1.0, leaves(decay(B, T, H))[0])
    CK = o.grad_fn.saved[-1]
    assert CK.shape == (20, B * H, D, D)                                # ⌈400 / 20⌉ checkpoints of S

def test_decay_bad_input():
    x = inputs(2, 5, 2, 3)
    with pytest.raises(ValueError, match="`g`"): recurrent_delta_rule(*x[:8], g=torch.zeros(2, 4, 2, dtype=torch.float64))
    with pytest.raises((TypeError, ValueError), match="`g`"): recurrent_delta_rule(*x[:8], g=torch.zeros(2, 5, 2))
