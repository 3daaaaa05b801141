"Language modelling: data and cache, model state carrying, evaluation, exact resume, CLI, offline failure, DDP."
import json, os, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest, torch
from rfwp.corpora import tokenize, build_vocab, encode_tokens, resolve_files, load_lm_data, DataError, get_lm_batch, _hub_reachable, EOS, UNK
from rfwp.tasks.lm import lm_model_config, eval_sliding, eval_full, make_lm_config, train_lm, generate, encode_prompt
from rfwp.models import ModelConfig, SeqModel
from rfwp.run import load_checkpoint, save_checkpoint, CheckpointError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
need_data = pytest.mark.skipif(not (DATA / "tinyshakespeare.txt").exists() or not (DATA / "wikitext-2.test.tokens").exists(),
                               reason=f"real text folder {DATA} is absent (tinyshakespeare.txt, wikitext-2.*.tokens); see shared/data/README.md")
TINY = dict(n_layers=1, d_model=16, n_heads=2, ff_dim=32, context=16, batch_size=4, steps=8, eval_every=4, log_every=2, warmup=2,
            eval_streams=2)
CLI_TINY = ["--n-layers", "1", "--d-model", "16", "--n-heads", "2", "--ff-dim", "32", "--context", "16", "--batch-size", "4",
            "--eval-every", "4", "--log-every", "2", "--warmup", "2", "--eval-streams", "2", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    "A small synthetic character-level corpus (works without the shared data folder)."
    rng = np.random.default_rng(0)
    words = ["the ", "fast ", "weights ", "of ", "a ", "delta ", "net ", "learn\n", "to ", "program "]
    p = tmp_path_factory.mktemp("text") / "tiny.txt"
    p.write_text("".join(rng.choice(words, 1500)))
    return p


# ---------------------------------------------------------------- data

def test_tokenize_and_vocab():
    toks = tokenize([" = A = ", "", " b a <unk> "])
    assert toks == ["=", "A", "=", EOS, EOS, "b", "a", UNK, EOS]
    v = build_vocab(toks)
    assert v[0] == EOS and set(v) == set(toks)
    ids, oov = encode_tokens(["a", "zzz"], v)
    assert [v[i] for i in ids] == ["a", UNK] and oov == 1
    with pytest.raises(ValueError, match="not in the vocabulary"): encode_tokens(["x"], build_vocab(list("ab"), "char"))

@need_data
def test_wikitext2_pair_and_cache(tmp_path):
    "WikiText-2 valid as training text (its last 10% held out), test as test: vocabulary, <unk>, cache without re-tokenising."
    files = resolve_files(train=DATA / "wikitext-2.valid.tokens", test=DATA / "wikitext-2.test.tokens")
    msgs = []
    d = load_lm_data(files, tmp_path, log=msgs.append)
    lines = (DATA / "wikitext-2.valid.tokens").read_text(encoding="utf-8").split("\n")[:-1]
    n_words = sum(len(l.split()) + 1 for l in lines)
    assert len(d.splits["train"]) + len(d.splits["valid"]) == n_words            # every word and one <eos> per line
    assert abs(len(d.splits["valid"]) / n_words - 0.1) < 1e-3
    assert d.vocab[0] in (EOS, "the", ",") and UNK in d.vocab and d.level == "word"
    assert d.oov["test"] > 0 and d.oov["train"] == 0                            # words of test unseen in valid become <unk>
    assert len(msgs) == 1 and "tokenised" in msgs[0]
    ref = tokenize(lines)                                                      # the streaming loader == the readable reference
    assert d.vocab == build_vocab(ref)
    assert np.array_equal(np.concatenate([d.splits["train"], d.splits["valid"]]), encode_tokens(ref, d.vocab)[0])
    again = load_lm_data(files, tmp_path, log=msgs.append)
    assert len(msgs) == 1                                                       # from the cache: no second tokenisation
    assert again.vocab == d.vocab and all(np.array_equal(again.splits[s], d.splits[s]) for s in d.splits)
    assert d.decode(d.splits["test"][:20]).count("\n") >= 1

@need_data
def test_tinyshakespeare_split(tmp_path):
    d = load_lm_data(resolve_files(text=DATA / "tinyshakespeare.txt"), tmp_path)
    assert d.vocab_size == 65 and len(d.splits["train"]) == int(1_115_394 * 0.9)
    assert d.splits["test"] is d.splits["valid"]
    assert d.decode(d.splits["train"][:9]) == "First Cit"
    text = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")
    assert d.vocab == build_vocab(list(text), "char")
    assert np.array_equal(np.concatenate([d.splits["train"], d.splits["valid"]]), encode_tokens(list(text), d.vocab)[0])

def test_bad_sources(tmp_path):
    with pytest.raises(DataError, match="--text: no such file"): resolve_files(text=tmp_path / "nope.txt")
    with pytest.raises(DataError, match="--data-dir: no such folder"): resolve_files(data_dir=tmp_path / "nope")
    with pytest.raises(DataError, match="wiki.train.tokens does not exist"): resolve_files(data_dir=tmp_path)
    with pytest.raises(DataError, match="cannot be combined"): resolve_files(data_dir=tmp_path, text=tmp_path)

def test_offline_fails_fast_with_hint(tmp_path):
    "No hub: one line naming --data-dir/--text, quickly, no traceback."
    assert not _hub_reachable("nonexistent.invalid", timeout=1.0)
    env = {**ENV, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "rfwp.cli", "train", "lm", "--no-online", "--run-dir", tmp_path / "run", "--cache-dir", tmp_path / "c"],
                       capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert r.returncode == 2, r.stderr[-2000:]
    assert time.time() - t0 < 20
    assert "Traceback" not in r.stderr and "--data-dir" in r.stderr and "--text" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr

# ---------------------------------------------------------------- model and evaluation

@pytest.mark.parametrize("kind", ["linear", "delta", "delta_rnn", "delta_lstm", "rdn", "delta_delta", "lstm"])
def test_carried_state_equals_one_pass(kind):
    torch.manual_seed(0)
    m = SeqModel(lm_model_config(kind, 30, n_layers=2, d_model=16, n_heads=2, ff_dim=32, dropout=0.0)).double().eval()
    assert m.carries_state
    x = torch.randint(0, 30, (2, 24))
    one, _ = m(x[:, :-1], targets=x[:, 1:])
    parts, s = [], None
    for a, b in ((0, 1), (1, 8), (8, 23)):                                    # a 1-token segment, then uneven ones
        nll, s = m(x[:, a:b], state=s, targets=x[:, a + 1:b + 1]); parts.append(nll)
    torch.testing.assert_close(torch.cat(parts, 1), one, rtol=1e-10, atol=1e-10)
    assert abs(eval_full(m, x[0].numpy(), context=5, streams=1)["loss"] - one[0].mean().item()) < 1e-9

def test_transformer_refuses_state():
    m = SeqModel(lm_model_config("transformer", 30, n_layers=1, d_model=16, n_heads=2, ff_dim=32))
    assert not m.carries_state and m.cfg.resolved_positions() == "learned"
    with pytest.raises(ValueError, match="does not carry"): eval_full(m, np.arange(30) % 30, 8)

def test_sliding_window_brute_force():
    torch.manual_seed(1)
    m = SeqModel(lm_model_config("transformer", 12, n_layers=1, d_model=16, n_heads=2, ff_dim=32, dropout=0.0, context=6)).double()
    d = np.random.default_rng(1).integers(0, 12, 40)
    for stride in (1, 3, 6):
        ref = []                                     # each target with the windows' context: at least context - stride tokens
        n, prev = len(d) - 1, 0
        for e in list(range(6, n, stride)) + [n]:
            s = max(0, e - 6)
            x = torch.tensor(d[s:e + 1])[None]
            nll = m(x[:, :-1], targets=x[:, 1:])[0][0]
            ref += nll[prev - s:].tolist(); prev = e
        assert len(ref) == n
        assert abs(eval_sliding(m, d, 6, stride, batch_size=3)["loss"] - np.mean(ref)) < 1e-10

def test_adaptive_head():
    torch.manual_seed(0)
    cfg = lm_model_config("delta", 500, n_layers=1, d_model=16, n_heads=2, ff_dim=32, cutoffs=(100, 300, 1000), dropout=0.0)
    assert cfg.used_cutoffs() == [100, 300] and cfg.adaptive()
    m = SeqModel(cfg).double()
    x = torch.randint(0, 500, (2, 9))
    h, _ = m.hidden(x[:, :-1])
    lp = m.log_probs(h)                                                       # (B, T, V)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 8, dtype=lp.dtype))
    torch.testing.assert_close(m(x[:, :-1], targets=x[:, 1:])[0], -lp.gather(-1, x[:, 1:, None])[..., 0])
    small = SeqModel(lm_model_config("delta", 50, n_layers=1, d_model=16, n_heads=2, ff_dim=32))
    assert not small.cfg.adaptive() and small.head.weight is small.embed.weight                    # small: tied softmax
    with pytest.raises(ValueError, match="adaptive' needs a cut-off"): lm_model_config("delta", 50, head="adaptive")

def test_lm_model_config():
    "The language model is a SeqModel: small N(0, 0.02²) embeddings with dropout, learned positions for the Transformer only."
    c = make_lm_config("laptop", text="x.txt", model="transformer", dropout=0.1).model_config(65)
    assert isinstance(c, ModelConfig) and ModelConfig.from_dict(c.to_dict()) == c
    assert (c.positions, c.max_len, c.embed_std, c.embed_dropout, c.resolved_head(), c.scale_heads) == ("learned", 64, 0.02, 0.1, "tied", True)
    assert make_lm_config("laptop", model="rdn").model_config(65).resolved_positions() == "none"
    with pytest.raises(ValueError, match="head"): make_lm_config("laptop", head="softmax")

def test_batches_are_a_function_of_the_step():
    d = np.arange(500)
    x, y = get_lm_batch(d, 7, 4, 10, seed=3)
    assert torch.equal(y, x + 1) and torch.equal(x, get_lm_batch(d, 7, 4, 10, seed=3)[0])
    per = len(range(0, 499 // 10)) // 4
    seen = torch.cat([get_lm_batch(d, s, 4, 10, seed=3)[0][:, 0] for s in range(per)])
    assert len(set(seen.tolist())) == len(seen)                               # an epoch visits distinct windows

def test_stream_batches_continue():
    from rfwp.corpora import get_stream_batch
    d = np.arange(1000)
    x0, y0, new0 = get_stream_batch(d, 0, 4, 10)
    x1, y1, new1 = get_stream_batch(d, 1, 4, 10)
    assert new0 and not new1 and torch.equal(x1[:, 0], y0[:, -1]) and torch.equal(y0, x0 + 1)
    per = (999 // 4) // 10
    assert get_stream_batch(d, per, 4, 10)[2] and torch.equal(get_stream_batch(d, per, 4, 10)[0], x0)   # the next pass restarts
    assert torch.equal(torch.cat([get_stream_batch(d, 3, 4, 10, r, 2)[0] for r in (0, 1)]), get_stream_batch(d, 3, 4, 10)[0])

def test_carry_state_saved_in_checkpoint(text_file, tmp_path):
    "With carry_state the checkpoint holds the carried fast weights (test_exact_resume checks that a resume uses them)."
    cfg = make_lm_config("laptop", text=str(text_file), model="delta", carry_state=True, **{**TINY, "steps": 3})
    train_lm(cfg, tmp_path / "c", tmp_path / "cache", threads=1, progress=False, final_eval=False, log=lambda *x: None)
    ck = load_checkpoint(tmp_path / "c" / "last.pt")
    assert ck["kind"] == "lm" and ModelConfig.from_dict(ck["model_config"]) == cfg.model_config(len(ck["vocab"]))
    assert ck["task"]["carried"] is not None and ck["task"]["carried"][0][0].shape == (4, 2, 8, 8)     # (B, H, D, D) per block

def test_generate():
    m = SeqModel(lm_model_config("delta", 10, n_layers=1, d_model=16, n_heads=2, ff_dim=32))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = generate(m, [1, 2], 15, 1.0, 3, 4, g1)
    assert a == generate(m, [1, 2], 15, 1.0, 3, 4, g2) and len(a) == 15 and all(0 <= t < 10 for t in a)
    with pytest.raises(ValueError, match="prompt"): generate(m, [], 3)
    assert encode_prompt("ab", ["a", "b"], "char") == [0, 1]
    with pytest.raises(ValueError, match="not in the vocabulary"): encode_prompt("abz", ["a", "b"], "char")
    assert encode_prompt("x a", [EOS, UNK, "a"], "word") == [1, 2]

# ---------------------------------------------------------------- training

def _losses(run):
    return [(r["step"], r["split"], r["loss"]) for r in json.loads((run / "metrics.json").read_text())]

def test_exact_resume(text_file, tmp_path):
    "A run stopped at step 5 and resumed gives the same loss curve and weights as an uninterrupted run."
    for kind, carry in (("delta", False), ("transformer", False), ("rdn", True)):   # rdn: streams with the state carried across steps
        cfg = make_lm_config("laptop", text=str(text_file), model=kind, dropout=0.1, carry_state=carry, **TINY)
        a, b = tmp_path / f"{kind}-full", tmp_path / f"{kind}-resumed"
        ra = train_lm(cfg, a, tmp_path / "cache", threads=1, progress=False, log=lambda *x: None)
        rb = train_lm(cfg, b, tmp_path / "cache", threads=1, progress=False, stop_at=5, log=lambda *x: None)
        assert rb["status"] == "interrupted" and rb["step"] == 5
        rb = train_lm(cfg, b, tmp_path / "cache", resume=True, threads=1, progress=False, log=lambda *x: None)
        assert rb["status"] == "done" and _losses(a) == _losses(b)
        wa, wb = load_checkpoint(a / "last.pt")["model"], load_checkpoint(b / "last.pt")["model"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert ra["valid"]["windows"]["loss"] == rb["valid"]["windows"]["loss"]
        for f in ("metrics.csv", "curves.png", "results.json", "best.pt"): assert (a / f).exists()

def cli(capsys, *args):
    "Run `rfwp ...` in this process; (exit status, stdout, stderr)."
    from rfwp.cli import main
    try: rc = main(list(map(str, args)))
    except SystemExit as e: rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err

def test_cli_train_eval_generate(text_file, tmp_path, capsys):
    run, c = tmp_path / "run", tmp_path / "c"
    rc, out, err = cli(capsys, "train", "lm", "--text", text_file, *CLI_TINY, "--steps", "6", "--stop-at", "3", "--run-dir", run, "--cache-dir", c, "--threads", "1")
    assert rc == 0 and "continue with --resume" in out, out + err
    rc, out, err = cli(capsys, "train", "lm", "--text", text_file, *CLI_TINY, "--steps", "6", "--resume", "--run-dir", run, "--cache-dir", c, "--threads", "1")
    assert rc == 0 and "resuming" in out and "full" in out, err
    assert json.loads((run / "results.json").read_text())["step"] == 6
    rc, out, err = cli(capsys, "eval", "lm", run, "--json", "--mode", "windows", "full", "--cache-dir", c)
    assert rc == 0, err
    res = json.loads(out)
    assert res["valid_windows"]["loss"] > 0 and res["valid_full"]["tokens"] > 0 and res["test"] == "same as valid"
    rc, out, err = cli(capsys, "generate", run, "--prompt", "the fast", "--tokens", "30", "--top-k", "5")
    assert rc == 0 and out.startswith("the fast") and len(out.rstrip("\n")) >= len("the fast") + 20, err
    rc, out, err = cli(capsys, "generate", run, "--prompt", "the ~")
    assert rc == 2 and "not in the vocabulary" in err and "Traceback" not in err

def test_cli_errors(text_file, tmp_path, capsys):
    rc, out, err = cli(capsys, "train", "lm", "--model", "gru")
    assert rc == 2 and "invalid choice: 'gru'" in err and "delta_lstm" in err
    rc, out, err = cli(capsys, "train", "lm", "--text", tmp_path / "missing.txt", "--run-dir", tmp_path / "r")
    assert rc == 2 and "--text: no such file" in err and len(err.strip().splitlines()) == 1
    rc, out, err = cli(capsys, "train", "lm", "--help")
    assert rc == 0 and "--text" in out and "paper: 16" in out and "default: " in out
    rc, out, err = cli(capsys, "eval", "lm", tmp_path / "nothing")
    assert rc == 2 and "no such checkpoint" in err
    rc, out, err = cli(capsys, "train", "lm", "--text", text_file, "--context", "0")
    assert rc == 2 and "--context" in err and "must be >= 1" in err

def test_older_lm_checkpoint_is_a_clear_error(tmp_path, capsys):
    "A checkpoint of the former LMModel (its model config had no `positions`): one line naming the file, for eval and generate."
    old = dict(kind="delta", vocab_size=3, n_layers=1, d_model=16, n_heads=2, ff_dim=32, dropout=0.1, head="softmax",
               cutoffs=[20000, 40000, 200000], div_value=4.0, scale_heads=True, max_len=16, impl="auto")
    run = tmp_path / "old"; run.mkdir()
    save_checkpoint(dict(kind="lm", config=make_lm_config("laptop", text="x.txt").to_dict(), model_config=old, vocab=["a", "b", "c"],
                         level="char", model={}, step=1), run / "best.pt")
    for args in (("eval", "lm", run), ("generate", run)):
        rc, out, err = cli(capsys, *args)
        assert rc == 2 and str(run / "best.pt") in err and "older rfwp" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
    from rfwp.tasks.lm import load_lm_run
    bad = {**ModelConfig("delta", vocab_size=3, n_layers=1, d_model=16, n_heads=2).to_dict(), "n_head": 2}
    save_checkpoint(dict(kind="lm", model_config=bad, vocab=["a", "b", "c"], level="char", model={}, step=1), run / "last.pt")
    with pytest.raises(CheckpointError, match="does not fit this rfwp's SeqModel"): load_lm_run(run, "last")
    good = ModelConfig("delta", vocab_size=3, n_layers=1, d_model=16, n_heads=2).to_dict()
    save_checkpoint(dict(kind="lm", model_config=good, vocab=["a", "b", "c"], level="char", model={"x": torch.zeros(1)}, step=1), run / "last.pt")
    with pytest.raises(CheckpointError, match="weights do not fit"): load_lm_run(run, "last")

def test_ddp_two_processes(text_file, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "rfwp.cli", "train", "lm",
           "--text", text_file, *CLI_TINY, "--steps", "4", "--run-dir", run, "--cache-dir", tmp_path / "c", "--threads", "1",
           "--head", "adaptive", "--cutoffs", "6,12"]                           # the adaptive softmax under DDP too
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=180, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 x cpu" in r.stdout and r.stdout.count("valid: windows") == 1    # only rank 0 reports
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "done" and res["step"] == 4
    assert not any(k.startswith("module.") for k in load_checkpoint(run / "last.pt")["model"])

def test_sigterm_writes_checkpoint(text_file, tmp_path):
    import signal
    run = tmp_path / "sig"
    p = subprocess.Popen([sys.executable, "-m", "rfwp.cli", "train", "lm", "--text", str(text_file), *CLI_TINY, "--steps", "100000",
                          "--eval-every", "100000", "--run-dir", str(run), "--cache-dir", str(tmp_path / "c"), "--threads", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=ROOT)
    for line in p.stdout:
        if line.startswith("model "): break                                 # training has started
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    out = p.stdout.read()
    assert p.wait(timeout=60) == 128 + signal.SIGTERM, out
    assert "interrupted (signal SIGTERM)" in out and "Traceback" not in out
    assert load_checkpoint(run / "last.pt")["step"] > 0

def test_bench_speed_and_tables():
    "The benchmark code paths on tiny inputs (the real runs are in the notebook's slow cells)."
    from rfwp.tasks.lm_bench import bench_speed, speed_table, char_table
    rows = bench_speed(("transformer", "delta"), contexts=(8, 32), tokens=32, repeats=1, vocab=300, threads=0, log=lambda *a: None,
                       n_layers=1, ff_dim=32)
    assert [r["model"] for r in rows] == ["transformer", "delta"] and all(r["tok_s_32"] > 0 and "rel_32" in r for r in rows)
    t = speed_table(rows, (8, 32))
    assert "| delta |" in t and "At context 32 faster than the Transformer" in t
    cr = [dict(model=m, params=1, steps=2, valid_loss=l, valid_sliding=l, valid_full=l, tokens_per_s=5)
          for m, l in (("transformer", 2.0), ("delta", 2.05), ("rdn", 1.9))]
    t = char_table(cr)
    assert "Delta Net within 3% of the Transformer: yes (+2.5%)" in t and "Best RFWP (rdn, 1.9000) at or below the Transformer (2.0000): yes" in t

# ---------------------------------------------------------------- nothing lost, nothing silently wrong

def test_last_line_without_newline_is_kept(tmp_path):
    "A training file whose last line has no final newline: the line was dropped (a one-line file then looked empty)."
    from rfwp.corpora import load_lm_data
    f = tmp_path / "one.txt"; f.write_text("a b c d e f a b c d e f")          # one line, no newline
    data = load_lm_data(resolve_files(train=f), tmp_path / "cache", log=lambda *a: None)
    assert len(data.splits["train"]) + len(data.splits["valid"]) == 13        # 12 words and <eos>

def test_cache_leaves_no_temp_folder(tmp_path):
    "Two processes tokenising one corpus into one cache: both succeed and no `<key>.tmp<pid>` is left (one was, in 4 of 4 tries)."
    f = tmp_path / "c.txt"; f.write_text("the fast weights of a delta net\n" * 3000)
    code = "import sys; from rfwp.corpora import load_lm_data, resolve_files; load_lm_data(resolve_files(text=sys.argv[1]), sys.argv[2], log=lambda *a: None)"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(f), str(tmp_path / "cache")], env=ENV, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0], [p.stderr.read() for p in procs]
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp" in p.name]
    import shutil
    key = next((tmp_path / "cache").iterdir()); shutil.rmtree(key)
    (stale := key.with_name(key.name + ".tmp999999999")).mkdir()          # what a process killed while writing leaves
    subprocess.run([sys.executable, "-c", code, str(f), str(tmp_path / "cache")], env=ENV, check=True)
    assert key.is_dir() and not stale.exists()

def test_resume_refuses_a_changed_corpus(text_file, tmp_path):
    "The same characters in another order: resume re-mapped the vocabulary and went on with reinterpreted ids."
    from rfwp.tasks.lm import make_lm_config, train_lm
    f = tmp_path / "t.txt"; f.write_text(text_file.read_text())
    cfg = make_lm_config("laptop", text=str(f), **TINY)
    q = dict(progress=False, log=lambda *a, **k: None, threads=1, final_eval=False)
    train_lm(cfg, tmp_path / "r", tmp_path / "cache", stop_at=4, **q)
    f.write_text(f.read_text()[::-1])
    with pytest.raises(ValueError, match="data changed since this run started"): train_lm(cfg, tmp_path / "r", tmp_path / "cache", resume=True, **q)
