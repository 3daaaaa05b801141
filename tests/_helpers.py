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
