"""Every op of `rfwp.ops.OPS` has a usage example in its docstring (shown on its API page), and the example runs as written."""
import doctest
import pytest
import torch
from rfwp.ops import OPS

@pytest.mark.parametrize("name", list(OPS))
def test_op_docstring_example_runs(name):
    op = OPS[name]
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(op, name, globs={}) if t.examples]
    assert tests, f"{name}: its docstring has no `>>>` example"
    torch.manual_seed(0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for t in tests: runner.run(t)
    res = runner.summarize(verbose=False)
    assert res.failed == 0 and res.attempted >= 4, f"{name}: {res.failed} of {res.attempted} example lines failed"
