"""Fixtures shared by the test files.

Without a CUDA GPU the Triton kernels run under Triton's interpreter (NumPy, one program at a time). TRITON_INTERPRET
must be set before any kernel is decorated, so it is set here, before pytest imports a test file; `impl="auto"` still
picks the PyTorch path for CPU tensors, so the tests that do not ask for Triton are unaffected."""
import os
import pytest, torch
if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")

@pytest.fixture
def one_thread():
    "Tiny tensors make every op dispatch-bound: one thread avoids OpenMP spin-waits when other jobs share the cores."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture
def nan_fill():
    "Every Triton kernel output starts as NaN, so an element that a kernel does not write fails the comparison."
    td = pytest.importorskip("rfwp.ops.triton_delta")
    old, td.NAN_FILL = td.NAN_FILL, True
    yield
    td.NAN_FILL = old
