"Algorithmic task generators: every label against an independent evaluator, determinism, files, batches."
import os, random, subprocess, sys, statistics
import pytest, torch
from rfwp.data import (Vocab, code_program, run_program, listops_sample, eval_listops, DataSpec, NO_OUT, code_trace, CODE_TRACE_VOCAB,
                        CODE_SRC_VOCAB, CODE_TGT_VOCAB, LISTOPS_SRC_VOCAB, write_split, read_split, load_dataset,
                        encode, batch_order, get_batch)

# ---------------------------------------------------------------- independent evaluators (test-local)

def exec_program(src):
    """Execute a program by translating each `;`-terminated statement to a line of Python (independent
    of `rfwp.tasks.run_program`); return {position of a print's `;`: value} and every value taken."""
    out, seen, env = {}, [], {}
    lines, stmt = [], []
    for i, w in enumerate(src):
        stmt.append(w)
        if w != ";": continue
        s, guard = " ".join(stmt[:-1]), ""
        if s.startswith("if "):
            cond, s = s[3:].split(" : ")
            guard = f"if {cond}: "
        if s.startswith("print "): body = f"out[{i}] = {s.split()[1]}"
        elif " ++" in s: body = f"{s.split()[0]} = {s.split()[0]} + 1"
        elif " --" in s: body = f"{s.split()[0]} = {s.split()[0]} - 1"
        else: body = s
        lines += [guard + body, "check()"]
        stmt = []
    assert not stmt, "program does not end with ;"
    check = lambda: seen.extend(v for k, v in env.items() if len(k) == 1)
    exec("\n".join(lines), {"out": out, "check": check}, env)
    return out, seen

def py_listops(tokens):
    "Evaluate ListOps by turning it into a Python expression."
    fns = {"[MIN": "min([", "[MAX": "max([", "[FIRST": "(lambda a: a[0])(["}
    expr = " ".join(fns.get(w, "])," if w == "]" else w + ",") for w in tokens)
    return eval(expr.rstrip(","), {})

def nesting(tokens):
    d = m = 0
    for w in tokens:
        if w.startswith("["): d += 1; m = max(m, d)
        elif w == "]": d -= 1
    assert d == 0
    return m

# ---------------------------------------------------------------- code execution

@pytest.mark.parametrize("n_vars,n", [(3, 2000), (5, 1000)])
def test_code_labels_match_python(n_vars, n):
    rng = random.Random(1234 + n_vars)
    lengths = []
    for _ in range(n):
        src, tgt = code_program(rng, n_vars=n_vars)
        assert len(src) == len(tgt)
        out, seen = exec_program(src)
        expected = {i: int(t) for i, t in enumerate(tgt) if t != NO_OUT}
        assert out == expected
        assert run_program(src) == expected
        assert all(-8 <= v <= 16 for v in seen)
        assert all(src[i] == ";" for i in expected)
        assert src[1] == "=" and src[-3] == "print"                     # first an assignment, last a print
        assert src.count(";") == 100
        assert set(src) <= set(CODE_SRC_VOCAB.itos) and set(tgt) <= set(CODE_TGT_VOCAB.itos)
        assert {w for w in src if w.isalpha() and len(w) == 1} <= set("xyzab"[:n_vars])
        lengths.append(len(src))
    assert 400 < statistics.mean(lengths) < 500                          # the paper: 377-542 tokens

def trace_by_eval(src):
    "The trace by Python's eval/exec, one statement at a time (independent of `code_trace`): {position: label}."
    env, out, start = {}, {}, 0
    for i, w in enumerate(src):
        if w == ":":
            var, op, c = src[i - 3:i]
            out[i] = str(eval(f"{var} {op} {c}", {}, dict(env))).lower()
        if w != ";": continue
        stmt, start = src[start:i], i + 1
        run = True
        if stmt[0] == "if": run, stmt = out[stmt.index(":") + i - len(stmt)] == "true", stmt[stmt.index(":") + 1:]
        if stmt[0] == "print": continue
        var = stmt[0]
        if run: exec(f"{var} = {stmt[2]}" if stmt[1] == "=" else f"{var} {stmt[1][0]}= 1", {}, env)
        if var in env: out[i] = str(env[var])
    return out

@pytest.mark.parametrize("n_vars", [1, 3, 5])
def test_code_trace_matches_python(n_vars):
    rng = random.Random(77 + n_vars)
    for _ in range(300):
        src, _ = code_program(rng, n_vars=n_vars, n_statements=rng.randrange(2, 40))
        tr = code_trace(src)
        assert len(tr) == len(src)
        assert {i: CODE_TRACE_VOCAB.itos[t] for i, t in enumerate(tr) if t >= 0} == trace_by_eval(src)

def test_code_reaches_the_range_limits():
    "The range rule is exercised: some programs get close to -8 and 16."
    rng, lo, hi = random.Random(0), 0, 0
    for _ in range(300):
        _, seen = exec_program(code_program(rng, n_vars=3)[0])
        lo, hi = min(lo, *seen), max(hi, *seen)
    assert lo <= -5 and hi >= 13

def test_code_program_bad_args():
    with pytest.raises(ValueError, match="n_vars"): code_program(random.Random(0), n_vars=11)
    with pytest.raises(ValueError, match="n_statements"): code_program(random.Random(0), n_statements=1)

# ---------------------------------------------------------------- ListOps

@pytest.mark.parametrize("depth,n,mean_len", [(10, 3000, 98), (15, 400, 180)])
def test_listops_labels_match_evaluator(depth, n, mean_len):
    rng = random.Random(depth)
    lengths, labels = [], []
    for _ in range(n):
        src, tgt = listops_sample(rng, depth=depth)
        v = int(tgt[0])
        assert py_listops(src) == v == eval_listops(src)
        assert nesting(src) == depth
        assert src[-1] == "]" and src[0].startswith("[")
        assert set(src) <= set(LISTOPS_SRC_VOCAB.itos)
        lengths.append(len(src)); labels.append(v)
    assert abs(statistics.mean(lengths) - mean_len) < 0.1 * mean_len     # the paper: ~98 and ~180 tokens
    assert set(labels) == set(range(10))

def test_eval_listops_small():
    assert eval_listops("[MIN 3 [MAX 4 7 ] 5 ]".split()) == 3
    assert eval_listops("[FIRST [MAX 4 7 ] 0 ]".split()) == 7
    with pytest.raises(ValueError, match="trailing"): eval_listops("[MIN 1 2 ] 3".split())
    with pytest.raises(ValueError, match="depth"): listops_sample(random.Random(0), depth=0)

# ---------------------------------------------------------------- determinism, splits, files

def test_determinism_by_seed():
    a = DataSpec("listops", depth=4, n_train=50, seed=0).generate("train")
    assert a == DataSpec("listops", depth=4, n_train=50, seed=0).generate("train")
    assert a != DataSpec("listops", depth=4, n_train=50, seed=1).generate("train")
    assert a[:10] == DataSpec("listops", depth=4, n_train=10, seed=0).generate("train")   # a prefix
    c = DataSpec("codeexec", n_valid=20)
    assert c.generate("valid") != c.generate("test")

def test_determinism_across_processes():
    "String seeds do not depend on PYTHONHASHSEED."
    code = "from rfwp.data import DataSpec; print(DataSpec('codeexec', n_test=3).generate('test')[2][0][:30])"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": h}).stdout for h in ("1", "2")}
    assert len(outs) == 1

def test_processes_generating_one_dataset_at_once(tmp_path):
    "Several processes that need the same dataset (e.g. `rfwp bench formal --jobs 2`) generate it side by side without colliding."
    code = ("import sys; from rfwp.data import DataSpec, load_dataset; "
            "load_dataset(DataSpec('formal', lang='parity', n_train=20000, n_valid=300, n_test=300), sys.argv[1], log=lambda *a: None)")
    # 3 rounds of 4 processes: with a temp name shared by the processes (before), about one process in four died
    for r in range(3):
        procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"data{r}")], stderr=subprocess.PIPE, text=True) for _ in range(4)]
        errs = [p.communicate(timeout=300)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errs
        d = next((tmp_path / f"data{r}").iterdir())
        assert sorted(f.name for f in d.iterdir()) == ["meta.json", "src_vocab.txt", "test.txt", "tgt_vocab.txt", "train.txt", "valid.txt"]
        assert len(read_split(d / "train.txt")) == 20000

def test_file_round_trip(tmp_path):
    spec = DataSpec("codeexec", n_train=20, n_valid=5, n_test=5)
    samples = spec.generate("train")
    write_split(tmp_path / "a.txt", samples)
    assert read_split(tmp_path / "a.txt") == samples
    lines = (tmp_path / "a.txt").read_text().splitlines()
    assert len(lines) == 20 and all(l.count("\t") == 1 for l in lines)
    (tmp_path / "bad.txt").write_text("x = 1 ;\n")
    with pytest.raises(ValueError, match="bad.txt:1"): read_split(tmp_path / "bad.txt")

def test_load_dataset(tmp_path):
    spec = DataSpec("listops", depth=3, n_train=30, n_valid=10, n_test=10)
    data = load_dataset(spec, tmp_path, log=lambda *a: None)
    assert {k: len(v) for k, v in data.items()} == {"train": 30, "valid": 10, "test": 10}
    assert data["test"] == spec.generate("test")
    d = tmp_path / spec.name()
    mtime = (d / "train.txt").stat().st_mtime_ns
    assert load_dataset(spec, tmp_path, log=lambda *a: None) == data                       # reused, not rewritten
    assert (d / "train.txt").stat().st_mtime_ns == mtime
    small = DataSpec("listops", depth=3, n_train=5, n_valid=10, n_test=10)
    assert load_dataset(small, tmp_path, log=lambda *a: None)["train"] == data["train"][:5]
    assert Vocab.load(d / "src_vocab.txt") == LISTOPS_SRC_VOCAB
    (d / "meta.json").write_text('{"task": "codeexec"}')
    with pytest.raises(ValueError, match="different dataset"): load_dataset(spec, tmp_path)

def test_vocab():
    v = Vocab(["<pad>", "a", "b"])
    assert v.encode(["b", "a"]) == [2, 1] and v.decode(torch.tensor([1, 2])) == ["a", "b"]
    with pytest.raises(ValueError, match="unknown word 'c'"): v.encode(["c"])
    with pytest.raises(ValueError, match="duplicate"): Vocab(["a", "a"])
    with pytest.raises(ValueError, match="choose from"): DataSpec("sorting")

# ---------------------------------------------------------------- tensors and batches

def test_encode_and_batches():
    spec = DataSpec("codeexec", n_statements=10, n_train=64)
    samples = spec.generate("train")
    enc = encode(samples, spec)
    for i, (s, t) in enumerate(samples):
        n = len(s)
        assert enc.lengths[i] == n
        assert CODE_SRC_VOCAB.decode(enc.tokens[i, :n]) == s and (enc.tokens[i, n:] == 0).all()
        assert CODE_TGT_VOCAB.decode(enc.targets[i, :n]) == t and (enc.targets[i, n:] == -1).all()
    order = batch_order(enc.lengths, 16, epoch=0, seed=3)
    assert len(order) == 4 and sorted(torch.cat(order).tolist()) == list(range(64))
    assert all((a == b).all() for a, b in zip(order, batch_order(enc.lengths, 16, epoch=0, seed=3)))
    assert any((a != b).any() for a, b in zip(order, batch_order(enc.lengths, 16, epoch=1, seed=3)))
    b = get_batch(enc, order[0])
    assert b["tokens"].shape[1] == b["lengths"].max() == b["targets"].shape[1]
    halves = [get_batch(enc, order[0], r, 2) for r in (0, 1)]
    assert sorted(torch.cat([h["lengths"] for h in halves]).tolist()) == sorted(b["lengths"].tolist())

def test_listops_encoding():
    spec = DataSpec("listops", depth=2, n_train=10)
    samples = spec.generate("train")
    enc = encode(samples, spec)
    assert enc.targets.shape == (10,)
    assert enc.targets.tolist() == [int(t[0]) for _, t in samples]
