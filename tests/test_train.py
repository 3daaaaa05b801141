"Training loop: exact resume, SIGTERM, corrupt checkpoints, config refusal, objectives, DDP with 2 processes."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from rfwp.tasks.algorithmic import TrainConfig, PRESETS, make_config, train, sequence_objective, token_objective, summarize
from rfwp.run import rng_state, set_rng_state, lr_schedule, save_checkpoint, load_checkpoint, CheckpointError, Dist

TINY = dict(depth=3, n_train=512, n_valid=64, n_test=64, n_layers=1, d_model=16, n_heads=2, ff_dim=32,
            batch_size=16, steps=24, warmup=4, eval_every=8, log_every=1, dropout=0.1)
QUIET = dict(progress=False, log=lambda *a, **k: None, threads=1)

def tiny(**kw): return make_config("listops", "laptop", **{**TINY, **kw})

def train_losses(run_dir):
    rows = json.loads((Path(run_dir) / "metrics.json").read_text())
    return [(r["step"], r["loss"]) for r in rows if r["split"] == "train"]

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory): return tmp_path_factory.mktemp("data")

@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_dir):
    "An uninterrupted tiny run (dropout on, so the random state matters)."
    d = tmp_path_factory.mktemp("full")
    res = train(tiny(), d, data_dir, **QUIET)
    return d, res

# ---------------------------------------------------------------- presets and configs

def test_paper_preset_is_the_official_setting():
    c = make_config("codeexec", "paper")
    assert (c.n_layers, c.d_model, c.n_heads, c.ff_dim, c.dropout) == (4, 256, 16, 1024, 0.1)
    assert (c.batch_size, c.lr, c.beta1, c.beta2, c.eps, c.clip, c.schedule) == (64, 3e-4, 0.9, 0.995, 1e-9, 0.0, "constant")
    assert (c.n_train, c.n_valid, c.n_test) == (10_000, 1_000, 1_000)
    assert all(p.why for p in PRESETS.values())

def test_config_validation():
    with pytest.raises(ValueError, match="choose from paper, laptop"): make_config("listops", "big")
    with pytest.raises(ValueError, match="unknown task"): make_config("sorting")
    with pytest.raises(ValueError, match="choose from"): make_config("listops", model="gru")
    with pytest.raises(ValueError, match="unknown config field"): make_config("listops", learning_rate=1)
    with pytest.raises(ValueError, match="dropout"): make_config("listops", dropout=1.0)
    with pytest.raises(ValueError, match="n_heads"): make_config("listops", d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="depth"): make_config("listops", depth=30)
    c = make_config("listops")
    assert TrainConfig.from_dict(c.to_dict()) == c

def test_cosine_schedule():
    c = tiny(steps=100, warmup=10, schedule="cosine")
    f = lr_schedule(c.schedule, c.steps, c.warmup)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1, abs=0.03) and f(100) == pytest.approx(0)
    assert all(f(s) >= f(s + 1) for s in range(9, 100))
    assert lr_schedule("constant", 100, 0)(57) == 1

# ---------------------------------------------------------------- objectives

def test_objectives():
    logits = torch.full((2, 4, 5), -5.0)
    logits[0, 2, 3] = logits[1, 3, 1] = 5.0
    _, s = sequence_objective(logits, dict(lengths=torch.tensor([3, 4]), targets=torch.tensor([3, 2])))
    assert summarize(s)["acc"] == 0.5
    logits[:, :, 0] = 0.0                                               # `_` everywhere else
    tgt = torch.tensor([[0, 0, 3, -1], [0, 0, 0, 1]])
    loss, s = token_objective(logits, dict(targets=tgt))
    m = summarize(s)
    assert (m["acc"], m["print_acc"], m["token_acc"]) == (1.0, 1.0, 1.0)
    tgt[1, 1] = 2                                                       # one printed value wrong -> that sequence wrong
    m = summarize(token_objective(logits, dict(targets=tgt))[1])
    assert (m["acc"], m["print_acc"]) == (0.5, 2 / 3)

def test_rng_state_round_trip():
    import random, numpy as np
    s = rng_state()
    a = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(s)
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]

# ---------------------------------------------------------------- runs, resume

def test_run_files(full_run):
    d, res = full_run
    assert res["status"] == "done" and res["step"] == 24 and 0 <= res["test_acc"] <= 1
    for f in ("config.json", "last.pt", "best.pt", "metrics.csv", "metrics.json", "curves.png", "results.json"):
        assert (d / f).exists(), f
    assert not list(d.glob("*.tmp*"))
    ck = load_checkpoint(d / "last.pt")
    assert ck["step"] == 24 and ck["config"] == tiny().to_dict() and ck["model_config"]["kind"] == "rdn"
    assert {"torch", "python", "numpy"} <= set(ck["rng"])
    header = (d / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("step,epoch,split,loss,acc")
    assert [r["split"] for r in json.loads((d / "metrics.json").read_text())].count("test") == 1

def test_exact_resume(full_run, data_dir, tmp_path):
    "Stopped after step 11 (mid epoch, between evaluations, inside a log interval) and resumed: the same curve."
    d, _ = full_run
    r1 = train(tiny(), tmp_path, data_dir, stop_at=11, **QUIET)
    assert r1["status"] == "interrupted" and r1["step"] == 11
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 11
    r2 = train(tiny(), tmp_path, data_dir, resume=True, **QUIET)
    assert r2["status"] == "done"
    assert train_losses(tmp_path) == train_losses(d)
    assert r2["test_acc"] == json.loads((d / "results.json").read_text())["test_acc"]

def test_resume_may_extend_steps(full_run, data_dir, tmp_path):
    train(tiny(steps=8, eval_every=4), tmp_path, data_dir, **QUIET)
    res = train(tiny(steps=12, eval_every=4), tmp_path, data_dir, resume=True, **QUIET)
    assert res["step"] == 12

def test_config_mismatch_refused(full_run, data_dir):
    d, _ = full_run
    before = {f: (d / f).read_bytes() for f in ("config.json", "last.pt", "best.pt", "metrics.json")}
    with pytest.raises(ValueError, match="different config.*lr"): train(tiny(lr=0.1), d, data_dir, **QUIET)
    with pytest.raises(ValueError, match="different config"): train(tiny(lr=0.1), d, data_dir, resume=True, **QUIET)
    with pytest.raises(ValueError, match="--resume"): train(tiny(steps=30), d, data_dir, **QUIET)
    assert before == {f: (d / f).read_bytes() for f in before}

def test_overwrite(data_dir, tmp_path):
    train(tiny(steps=4, eval_every=2), tmp_path, data_dir, **QUIET)
    res = train(tiny(steps=4, eval_every=2, lr=0.01), tmp_path, data_dir, overwrite=True, **QUIET)
    assert res["status"] == "done" and json.loads((tmp_path / "config.json").read_text())["lr"] == 0.01

def test_codeexec_run(data_dir, tmp_path):
    "The token objective through the whole loop: metrics with print accuracy, a test row."
    small = {k: v for k, v in TINY.items() if k != "depth"}
    cfg = make_config("codeexec", "laptop", **{**small, "n_train": 64, "n_valid": 16, "n_test": 16, "batch_size": 8,
                                               "steps": 4, "eval_every": 2})
    res = train(cfg, tmp_path, data_dir, **QUIET)
    assert res["status"] == "done" and {"acc", "print_acc", "token_acc"} <= set(res["test"])
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["split"] for r in rows].count("valid") == 2
    assert all("print_acc" in r for r in rows)
    # length generalisation: tested on programs 2x and 4x as long, reported in the result and as metric rows
    assert [r["split"] for r in rows][-3:] == ["test", "test_2x", "test_4x"] and {"acc", "print_acc"} <= set(res["test_4x"])
    from rfwp.tasks.algorithmic import longer_tests
    long = longer_tests(cfg.spec())
    assert long[4].lengths.float().mean() > 3 * long[2].lengths.float().mean() / 2 > 0

def test_codeexec_trace_loss(data_dir, tmp_path):
    "trace > 0: extra output units trained on the program's trace; the task's metrics read only the task's classes."
    from rfwp.data import CODE_TGT_VOCAB, CODE_TRACE_VOCAB
    from rfwp.tasks.algorithmic import trace_targets, AlgoTask
    small = {k: v for k, v in TINY.items() if k != "depth"}
    kw = {**small, "n_statements": 6, "n_train": 64, "n_valid": 16, "n_test": 16, "batch_size": 8, "steps": 6, "eval_every": 3}
    cfg = make_config("codeexec", "laptop", trace=1.0, **kw)
    assert cfg.model_config().n_out == len(CODE_TGT_VOCAB) + len(CODE_TRACE_VOCAB)
    res = train(cfg, tmp_path / "t", data_dir, **QUIET)
    plain = train(make_config("codeexec", "laptop", trace=0.0, **kw), tmp_path / "p", data_dir, **QUIET)
    assert res["status"] == plain["status"] == "done" and {"acc", "print_acc"} <= set(res["test"])
    assert train_losses(tmp_path / "t") != train_losses(tmp_path / "p")           # the trace changes the gradients
    r1 = train(cfg, tmp_path / "r", data_dir, stop_at=4, **QUIET)                  # and resumes exactly
    train(cfg, tmp_path / "r", data_dir, resume=True, **QUIET)
    assert r1["status"] == "interrupted" and train_losses(tmp_path / "r") == train_losses(tmp_path / "t")
    task = AlgoTask(cfg, data_dir); task.setup(Dist(), lambda *a: None)
    tr = trace_targets(task.enc["train"])
    assert tr.shape == task.enc["train"].tokens.shape and (tr >= 0).any() and ((tr >= 0) <= (task.enc["train"].tokens > 0)).all()
    with pytest.raises(ValueError, match="trace: only code execution"): make_config("listops", "laptop", trace=1.0)
    assert make_config("codeexec", "laptop").trace == 1.0 and make_config("codeexec", "paper").trace == 0.0

# ---------------------------------------------------------------- checkpoints

def test_atomic_save_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, p)
    def boom(obj, f): f.write(b"partial"); raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError): save_checkpoint({"step": 2}, p)
    monkeypatch.undo()
    assert load_checkpoint(p)["step"] == 1

@pytest.mark.parametrize("damage", ["truncate", "foreign", "garbage", "other_run"])
def test_bad_checkpoint_clear_error(full_run, data_dir, tmp_path, damage):
    import shutil
    d = tmp_path / "run"
    shutil.copytree(full_run[0], d)
    last = d / "last.pt"
    if damage == "truncate": last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    elif damage == "foreign": torch.save({"model": torch.nn.Linear(2, 2).state_dict()}, last)
    elif damage == "garbage": last.write_bytes(b"\x00not a checkpoint" * 10)
    else:
        ck = load_checkpoint(last); ck["config"]["lr"] = 0.5
        save_checkpoint({k: v for k, v in ck.items() if k != "format"}, last)
    before = {f.name: f.read_bytes() for f in d.iterdir()}
    with pytest.raises(CheckpointError) as e: train(tiny(), d, data_dir, resume=True, **QUIET)
    msg = str(e.value)
    assert "last.pt" in msg and "Nothing was changed" in msg
    assert {"truncate": "truncated", "garbage": "truncated", "foreign": "not an rfwp checkpoint", "other_run": "different run"}[damage] in msg
    assert before == {f.name: f.read_bytes() for f in d.iterdir()}

# ---------------------------------------------------------------- signals (subprocess)

CLI_TINY = ["--depth", "3", "--n-train", "512", "--n-valid", "64", "--n-test", "64", "--n-layers", "1", "--d-model", "16",
            "--n-heads", "2", "--ff-dim", "32", "--batch-size", "16", "--warmup", "4", "--log-every", "1",
            "--schedule", "constant", "--threads", "1", "--no-progress"]

def test_sigterm_writes_checkpoint_and_resume_is_exact(data_dir, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rfwp.cli", "train", "listops", *CLI_TINY, "--steps", "5000", "--eval-every", "1000",
           "--run-dir", str(run), "--data-dir", str(data_dir)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:                                               # wait until the loop runs
        if line.startswith("model "): break
    time.sleep(1.5)
    p.send_signal(signal.SIGTERM)
    out = p.stdout.read()
    assert p.wait(timeout=60) == 128 + signal.SIGTERM, out
    assert "interrupted (signal SIGTERM)" in out and "Traceback" not in out
    ck = load_checkpoint(run / "last.pt")
    n = ck["step"]
    assert 0 < n < 5000
    # continue for a few more steps; the curve equals an uninterrupted run of the same length
    m = n + 5
    r = subprocess.run(cmd[:-4] + ["--run-dir", str(run), "--data-dir", str(data_dir), "--resume", "--steps", str(m)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    ref = tmp_path / "ref"
    cfg = make_config("listops", "laptop", **{**TINY, "dropout": 0.0, "schedule": "constant", "steps": m, "eval_every": 1000})
    train(cfg, ref, data_dir, **QUIET)
    assert train_losses(run) == train_losses(ref)

def test_ctrl_c_writes_checkpoint(data_dir, tmp_path):
    cmd = [sys.executable, "-m", "rfwp.cli", "train", "listops", *CLI_TINY, "--steps", "5000", "--eval-every", "1000",
           "--run-dir", str(tmp_path), "--data-dir", str(data_dir)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:
        if line.startswith("model "): break
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out = p.stdout.read()
    assert p.wait(timeout=60) == 130, out
    assert "interrupted (signal SIGINT)" in out and "Traceback" not in out
    assert load_checkpoint(tmp_path / "last.pt")["step"] > 0

# ---------------------------------------------------------------- data parallel (2 processes, gloo)

def test_ddp_two_processes(data_dir, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "rfwp.cli",
           "train", "listops", *CLI_TINY, "--steps", "6", "--eval-every", "3", "--run-dir", str(run), "--data-dir", str(data_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("test accuracy") == 1                        # only rank 0 reports
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "done" and res["step"] == 6
    ck = load_checkpoint(run / "last.pt")
    assert not any(k.startswith("module.") for k in ck["model"])        # the plain model's weights, not DDP's
    assert "2 x cpu" in r.stdout

# ---------------------------------------------------------------- code execution: the pipeline learns (and can fail)
def test_codeexec_learns_short_programs_and_not_random_targets(tmp_path):
    # 5-statement programs over 3 variables, a 2-layer LSTM of 64 units, 1000 steps (~20-30 s each on one thread).
    # Measured: 69-70% print / 51-55% sequence accuracy (seeds 1, 2). The control replaces every printed value by a
    # random one (same positions), which no model can predict: its test print accuracy must stay near 1/25.
    # (A one-position shift of the targets is no control for a causal model here: the value then sits on the
    # variable's name, which the model has read: the same LSTM reached 67.7% print accuracy on it in one run and
    # 30.8% in another, falling back to "the last digit in the program".)
    import random
    from rfwp.data import prepare_dataset, read_split, write_split, SPLITS, CODE_TGT_VOCAB, NO_OUT
    cfg = make_config("codeexec", "laptop", model="lstm", n_vars=3, n_statements=5, n_train=4000, n_valid=200, n_test=500,
                      n_layers=2, d_model=64, n_heads=4, ff_dim=128, steps=1000, eval_every=500, lr=3e-3, warmup=30, max_minutes=0,
                      trace=0.0)  # the task's own loss (the laptop preset adds the trace)
    values, rng = [v for v in CODE_TGT_VOCAB.itos if v != NO_OUT], random.Random(0)
    def run(name, change):
        d = prepare_dataset(cfg.spec(), tmp_path / name, log=lambda *a: None)
        for s in SPLITS: write_split(d / f"{s}.txt", [(src, [change(t) for t in tgt]) for src, tgt in read_split(d / f"{s}.txt")])
        return train(cfg, tmp_path / f"run-{name}", tmp_path / name, **QUIET)
    good = run("real", lambda t: t)
    assert good["test"]["print_acc"] > 0.55 and good["test_acc"] > 0.35, good["test"]
    noise = run("random", lambda t: t if t == NO_OUT else rng.choice(values))
    assert noise["test"]["print_acc"] < 0.15, noise["test"]
