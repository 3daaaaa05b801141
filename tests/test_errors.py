"""Bad input, tried as a hostile user would: every case ends in one line that names the argument or file and what was
expected (no stack trace on the command line, no IndexError or allocator message from deep inside)."""
import os, subprocess, sys
from pathlib import Path
import pytest, torch
from rfwp.ops import delta_rule, linear_attention, elu_sumnorm
from rfwp.layers import make_layer
from rfwp.models import ModelConfig, SeqModel

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

q = elu_sumnorm(torch.randn(1, 5, 2, 4)); v = torch.randn(1, 5, 2, 4)
MODEL = SeqModel(ModelConfig(kind="delta", n_layers=1, d_model=16, n_heads=2, vocab_size=10, n_out=3))

@pytest.mark.parametrize("call,err,words", [
    (lambda: delta_rule(q, q, v, None), TypeError, "`beta` is required"),
    (lambda: linear_attention(q, q, None), TypeError, "`v` is required"),
    (lambda: make_layer("rdn", 16, 2)(torch.randn(2, 5, 16, dtype=torch.float64)), TypeError, "dtype torch.float64 but the block's parameters"),
    (lambda: make_layer("rdn", 16, 2)(torch.ones(2, 5, 16, dtype=torch.long)), TypeError, "floating-point"),
    (lambda: make_layer("rdn", 16, 2)(torch.randn(2, 5, 16), (torch.zeros(2),)), TypeError, "initial_state"),
    (lambda: MODEL(torch.tensor([[1, 12]])), ValueError, "`tokens` must be ids in 0..9"),
    (lambda: MODEL(torch.tensor([[1, -1]])), ValueError, "`tokens` must be ids in 0..9"),
    (lambda: MODEL(torch.tensor([[1, 2]]), targets=torch.tensor([[1, 7]])), ValueError, "`targets` must be class ids in 0..2"),
    (lambda: ModelConfig(kind="delta", n_layers=1, d_model=True, n_heads=1, vocab_size=10), ValueError, "d_model must be a positive int"),
])
def test_python_api_errors_name_the_argument(call, err, words):
    with pytest.raises(err, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")): call()

A = ["train", "listops", "--n-train", "64", "--batch-size", "32", "--n-valid", "32", "--n-test", "32", "--d-model", "32", "--n-heads", "4",
     "--ff-dim", "64", "--n-layers", "1", "--depth", "3", "--threads", "1", "--no-progress", "--steps", "4", "--eval-every", "2"]

def rfwp(*args, cwd):
    return subprocess.run([sys.executable, "-m", "rfwp.cli", *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=120)

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    r = rfwp(*A, "--run-dir", d / "base", "--data-dir", d / "data", cwd=d)
    assert r.returncode == 0, r.stderr
    return d

def _damage(data, tmp_path, how):
    "A copy of the dataset folder, damaged."
    import shutil
    shutil.copytree(data / "data", tmp_path / "data")
    f = tmp_path / "data" / "listops-d3-s0"
    how(f)
    return tmp_path / "data"

@pytest.mark.parametrize("how,words", [
    (lambda f: (f / "train.txt").write_text("".join((f / "train.txt").read_text().splitlines(True)[:40])), "train.txt: holds 40 samples but"),
    (lambda f: (f / "train.txt").write_text(""), "train.txt: holds 0 samples but"),
    (lambda f: (f / "valid.txt").write_bytes(b"\x00\xff\xfe"), "valid.txt: is not a text file"),
    (lambda f: (f / "meta.json").write_text("{oops"), "meta.json: is not valid JSON"),
    (lambda f: (f / "train.txt").write_text((f / "train.txt").read_text().replace("[MAX", "[MAXX", 1)), "train.txt:"),
], ids=["cut", "empty", "binary", "meta", "unknown-token"])
def test_damaged_dataset_files_are_named(data, tmp_path, how, words):
    dd = _damage(data, tmp_path, how)
    r = rfwp(*A, "--run-dir", tmp_path / "r", "--data-dir", dd, cwd=tmp_path)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "r" / "config.json").exists()              # the failed start left nothing behind

@pytest.mark.parametrize("args,words", [
    (["--batch-size", "128"], "batch_size: 128 is larger than the training split"),
    (["--data-dir", "{tmp}/afile"], "cannot create"),
    (["--data-dir", "/proc/rfwp-no"], "cannot create"),
    (["--d-model", "100000", "--ff-dim", "10000000"], "does not fit in memory"),
])
def test_cli_refuses_in_one_line(data, tmp_path, args, words):
    (tmp_path / "afile").write_text("x")
    r = rfwp(*A, "--run-dir", tmp_path / "r", "--data-dir", data / "data", *[a.format(tmp=tmp_path) for a in args], cwd=tmp_path)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "r" / "config.json").exists()

def test_bench_refuses_a_negative_shape(tmp_path):
    r = rfwp("bench", "ops", "--shapes", "4,-8,16,8", cwd=tmp_path)
    assert r.returncode == 2 and "positive integers" in r.stderr and "Traceback" not in r.stderr, r.stderr

@pytest.mark.parametrize("kind", ["linear", "delta", "delta_mlp", "delta_delta", "delta_rnn", "delta_lstm", "rdn", "lstm_delta", "srwm", "lstm", "transformer"])
def test_a_wrong_state_is_named_for_every_layer_kind(kind):
    "A state of the wrong arity or shape: one line naming the state (an IndexError or a message from nn.LSTM for some kinds before)."
    blk = make_layer(kind, 16, 2)
    for st in [(torch.zeros(2),), tuple(torch.zeros(i + 1) for i in range(5))]:
        with pytest.raises((ValueError, TypeError), match="state"): blk(torch.randn(2, 5, 16), st)
