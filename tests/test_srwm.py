"The self-referential weight matrix: the reversal-backward PyTorch path against the per-step reference in float64."
import pytest, torch
from rfwp.ops.srwm import srwm, srwm_naive, srwm_torch, init_srwm_weights, srwm_sizes
from rfwp.utils import assert_close
from _helpers import outputs_and_grads, check_state_passed_through, leaves

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py

NAMES = "y dW_T dx dW dW0".split()

def inputs(B, T, H, D, Dy=None, dtype=torch.float64, seed=0, state=True):
    "x, W_0, ΔW_0 (zeros when not `state`)."
    g = torch.Generator().manual_seed(seed)
    W = init_srwm_weights(H, D, Dy, generator=g, dtype=torch.float64)
    x = torch.randn(B, T, H, D, generator=g, dtype=torch.float64)
    dW0 = 0.3 * torch.randn(B, H, *W.shape[1:], generator=g, dtype=torch.float64) if state else torch.zeros(B, H, *W.shape[1:], dtype=torch.float64)
    return [t.to(dtype) for t in (x, W, dW0)]

def public(impl):
    return lambda x, W, dW0: srwm(x, W, initial_state=dW0, output_final_state=True, impl=impl)

# awkward shapes: T = 1, odd T, D_y ≠ D (smaller and larger), one head, batch 1
SHAPES = [(1, 1, 1, 3, None), (2, 7, 3, 5, None), (3, 13, 2, 4, 1), (1, 9, 1, 6, 11), (2, 33, 2, 8, 3)]

@pytest.mark.parametrize("B,T,H,D,Dy", SHAPES)
@pytest.mark.parametrize("state", [True, False])
def test_torch_matches_naive(B, T, H, D, Dy, state):
    x = inputs(B, T, H, D, Dy, state=state)
    ref = outputs_and_grads(srwm_naive, x)
    got = outputs_and_grads(srwm_torch, x)
    for n, a, b in zip(NAMES, ref, got): assert_close(f"srwm {n}", a, b, 1e-10)

def test_public_impls_agree():
    x = inputs(2, 11, 2, 4, 3)
    ref = outputs_and_grads(public("naive"), x)
    for impl in ("torch", "auto"):
        for n, a, b in zip(NAMES, ref, outputs_and_grads(public(impl), x)): assert_close(f"srwm {impl} {n}", a, b, 1e-10)

def test_reference_is_self_referential():
    "Can-fail check: a version whose W_t is not fed back into its own k, q, β (they read W_0 only) differs from the op."
    x, W, dW0 = inputs(1, 12, 1, 4)
    D, E = 4, W.shape[-1]; sizes = srwm_sizes(D, E)
    M = W + dW0; M0 = M.clone(); ys = []
    for t in range(x.shape[1]):
        y = torch.einsum('bhde,bhd->bhe', M, x[:, t]).split(sizes, -1)[0]
        a = torch.einsum('bhde,bhd->bhe', M0, x[:, t])
        _, ak, aq, ab = a.split(sizes, -1)
        k, q, b = ak.softmax(-1), aq.softmax(-1), ab.sigmoid()
        rep = torch.cat([b[..., i:i + 1].expand(*b.shape[:-1], n) for i, n in enumerate(sizes)], -1)
        M = M + torch.einsum('bhd,bhe->bhde', k, rep * torch.einsum('bhde,bhd->bhe', M, q - k)); ys.append(y)
    y_true, _ = srwm_naive(x, W, dW0)
    assert (torch.stack(ys, 1) - y_true).abs().max() > 1e-3

def test_gradcheck():
    x = leaves(*inputs(1, 5, 2, 3, 2, seed=3))
    assert torch.autograd.gradcheck(srwm_torch, x, eps=1e-6, atol=1e-7)

def test_segments_equal_one_pass():
    x, W, dW0 = inputs(2, 21, 2, 4, 5)
    y, S = srwm(x, W, initial_state=dW0, output_final_state=True)
    y1, S1 = srwm(x[:, :8], W, initial_state=dW0, output_final_state=True)
    y2, S2 = srwm(x[:, 8:], W, initial_state=S1, output_final_state=True)
    assert_close("y segments", y, torch.cat([y1, y2], 1), 1e-12)
    assert_close("ΔW_T segments", S, S2, 1e-12)

def grads64(fn, x, seed=1):
    "Outputs and input gradients for an upstream gradient drawn in float64 (the same one for every dtype)."
    xs = leaves(*x); outs = list(fn(*xs))
    g = torch.Generator().manual_seed(seed)
    sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum() for o in outs).backward()
    return outs + [t.grad for t in xs]

def test_float32_long_sequence():
    "fp32 reversal over 2048 steps stays within 3e-4 of the float64 result (the backward undoes every write)."
    x64 = inputs(1, 2048, 1, 8, seed=5, state=False)
    ref = grads64(srwm_torch, x64)
    got = grads64(srwm_torch, [t.float() for t in x64])
    for n, a, b in zip(NAMES, ref, got):
        if n == "dW0": continue   # dW0 == dW (they enter as a sum), already compared
        assert_close(f"fp32 {n}", a, b.double(), 3e-4)

def test_empty_sequence():
    x, W, dW0 = leaves(*inputs(2, 0, 2, 3))
    y, S = srwm(x, W, initial_state=dW0, output_final_state=True)
    assert y.shape == (2, 0, 2, 3)
    check_state_passed_through(dW0, S)
    y, S = srwm(x.detach(), W.detach(), output_final_state=True)
    check_state_passed_through(None, S, shape=(2, 2, 3, W.shape[-1]), dtype=torch.float64)

@pytest.mark.parametrize("bad,msg", [
    (lambda x, W, S: (x[0], W, S), "x"),
    (lambda x, W, S: (x, W[..., :2 * 3 + 4], S), "E"),
    (lambda x, W, S: (x, W[:1], S), "H"),
    (lambda x, W, S: (x, W, S[..., :-1]), "initial_state"),
    (lambda x, W, S: (x, W.float(), S), "dtype"),
    (lambda x, W, S: (x.long(), W, S), "x"),
])
def test_bad_inputs(bad, msg):
    x, W, S = bad(*inputs(2, 4, 2, 3))
    with pytest.raises((ValueError, TypeError), match=msg):
        srwm(x, W, initial_state=S)

def test_triton_refused():
    x, W, S = inputs(1, 2, 1, 3)
    with pytest.raises(ValueError, match="triton"):
        srwm(x, W, impl="triton")
