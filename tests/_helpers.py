"Shared test helpers: run an op, backprop a random function of every output, collect all gradients."
import torch

def leaves(*xs):
    "Detached copies that require grad (None stays None)."
    return [None if x is None else x.detach().clone().requires_grad_() for x in xs]

def flat(out):
    "Flatten nested tuples of tensors (None dropped)."
    if out is None: return []
    if isinstance(out, torch.Tensor): return [out]
    return [t for o in out for t in flat(o)]

def outputs_and_grads(fn, inputs, seed=1):
    """Call `fn(*leaves)`, backprop a random linear function of every returned tensor,
    and return the returned tensors followed by the gradient of every input."""
    xs = leaves(*inputs)
    outs = flat(fn(*xs))
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    loss.backward()
    return outs + [None if x is None else x.grad for x in xs]

def check_state_passed_through(S0, S, *, shape=None, dtype=None):
    """At T = 0 the final state is the initial one: a copy equal to `S0` whose gradient reaches `S0` as the identity;
    without an initial state, zeros of `shape` and `dtype`."""
    from rfwp.utils import assert_close
    if S0 is not None:
        assert S is not S0
        assert_close("S_T", S0, S, 0)
        g = torch.randn_like(S); S.backward(g)
        assert_close("dS0", g, S0.grad, 0)
    else: assert S.shape == shape and S.dtype == dtype and not S.any()
