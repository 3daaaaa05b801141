"""The run layer's rules, tried as a hostile user would: two processes on one run dir, resumes at epoch ends, damaged and
missing files, contradicting flags, failing writes. Each case is run through the real training of a task."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from rfwp.run import (RunDirError, RunFileError, CheckpointError, atomic_write, load_checkpoint, save_checkpoint,
                      plot_curves, lr_schedule)
from rfwp.tasks.algorithmic import make_config, train

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TINY = dict(depth=3, n_train=64, n_valid=32, n_test=32, n_layers=1, d_model=16, n_heads=2, ff_dim=32,
            batch_size=32, steps=6, warmup=2, eval_every=3, log_every=1, dropout=0.1)
QUIET = dict(progress=False, log=lambda *a, **k: None, threads=1)
CLI_TINY = ["--depth", "3", "--n-train", "512", "--n-valid", "32", "--n-test", "32", "--n-layers", "1", "--d-model", "16",
            "--n-heads", "2", "--ff-dim", "32", "--batch-size", "16", "--threads", "1", "--no-progress"]

def tiny(**kw): return make_config("listops", "laptop", **{**TINY, **kw})

def cli_tiny(**kw):
    "The command-line options of `tiny(**kw)`."
    return [x for k, v in {**TINY, **kw}.items() for x in (f"--{k.replace('_', '-')}", str(v))] + ["--threads", "1", "--no-progress"]

def snapshot(d): return {f.name: f.read_bytes() for f in Path(d).iterdir() if f.name != ".lock"}

def rfwp(*args, **kw):
    return subprocess.run([sys.executable, "-m", "rfwp.cli", *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT, **kw)

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory): return tmp_path_factory.mktemp("data")

def train_rows(d): return [(r["step"], r["loss"]) for r in json.loads((Path(d) / "metrics.json").read_text()) if r["split"] == "train"]

# ---------------------------------------------------------------- resume at an epoch end

@pytest.mark.parametrize("stop", [2, 4])
def test_resume_from_epoch_end_checkpoint(data_dir, tmp_path, stop):
    "64 samples at batch 32: 2 batches an epoch, so steps 2 and 4 end an epoch (the code before the run layer raised IndexError here)."
    full = train(tiny(), tmp_path / "full", data_dir, **QUIET)
    r = train(tiny(), tmp_path / "part", data_dir, stop_at=stop, **QUIET)
    assert r["status"] == "interrupted" and {k: v for k, v in load_checkpoint(tmp_path / "part" / "last.pt")["task"].items() if k != "data"} == dict(epoch=stop // 2 - 1, pos=2)
    r = train(tiny(), tmp_path / "part", data_dir, resume=True, **QUIET)
    assert r["status"] == "done" and r["step"] == 6
    assert train_rows(tmp_path / "part") == train_rows(tmp_path / "full")
    assert r["test_acc"] == full["test_acc"]

# ---------------------------------------------------------------- two processes, one run dir

def test_second_process_refused_while_first_runs(data_dir, tmp_path):
    run = tmp_path / "run"
    args = ["train", "listops", *CLI_TINY, "--steps", "100000", "--eval-every", "1000", "--run-dir", run, "--data-dir", data_dir]
    p = subprocess.Popen([sys.executable, "-m", "rfwp.cli", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=ENV, cwd=ROOT)
    try:
        for line in p.stdout:
            if line.startswith("model "): break                         # the first process is training
        time.sleep(1.0)
        p.send_signal(signal.SIGSTOP)                                   # frozen, so that the files cannot change under the checks
        before = snapshot(run)
        for extra in ([], ["--resume"], ["--overwrite"], ["--lr", "0.5", "--overwrite"]):
            t0 = time.time()
            r = rfwp(*args, *extra, timeout=60)
            assert r.returncode == 2, r.stdout + r.stderr
            assert f"in use by another process (pid {p.pid})" in r.stderr and "Traceback" not in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1 and time.time() - t0 < 30     # at once, in one line
        assert snapshot(run) == before                                  # --overwrite destroyed nothing
        p.send_signal(signal.SIGCONT); p.send_signal(signal.SIGTERM)
        out = p.stdout.read()
        assert p.wait(timeout=60) == 128 + signal.SIGTERM and "Traceback" not in out
    finally:
        if p.poll() is None: p.send_signal(signal.SIGCONT); p.kill()
    n = load_checkpoint(run / "last.pt")["step"]
    assert n > 0
    r = rfwp(*args, "--stop-at", n + 2, timeout=120)                  # the lock is released: the same command continues the run
    assert r.returncode == 0 and "resuming" in r.stdout, r.stderr
    assert load_checkpoint(run / "last.pt")["step"] == n + 2

def test_racing_processes_write_unique_temp_files(data_dir, tmp_path):
    "Two processes started at once on one run dir: exactly one trains, the other is refused; no temp file is left."
    run = tmp_path / "race"
    args = ["train", "listops", *CLI_TINY, "--steps", "8", "--eval-every", "4", "--run-dir", run, "--data-dir", data_dir]
    ps = [subprocess.Popen([sys.executable, "-m", "rfwp.cli", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=ENV, cwd=ROOT) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in ps]
    codes = sorted(p.returncode for p in ps)
    assert codes == [0, 2], outs
    assert "in use by another process" in next(e for (o, e), p in zip(outs, ps) if p.returncode == 2)
    assert not list(run.glob("*.tmp*")) and not list(run.glob(".*.tmp"))
    assert json.loads((run / "results.json").read_text())["step"] == 8

# ---------------------------------------------------------------- the rule

@pytest.fixture(scope="module")
def done(tmp_path_factory, data_dir):
    d = tmp_path_factory.mktemp("done") / "run"
    train(tiny(), d, data_dir, **QUIET)
    return d

def copy(done, tmp_path):
    d = tmp_path / "run"; shutil.copytree(done, d); return d

def test_checkpoints_without_config_refused(done, data_dir, tmp_path):
    d = copy(done, tmp_path)
    (d / "config.json").unlink()
    before = snapshot(d)
    with pytest.raises(RunDirError, match="holds last.pt, best.pt.* but no config.json"): train(tiny(), d, data_dir, **QUIET)
    with pytest.raises(RunDirError, match="no run to resume"): train(tiny(), d, data_dir, resume=True, **QUIET)
    assert snapshot(d) == before
    assert train(tiny(), d, data_dir, overwrite=True, **QUIET)["status"] == "done"

def test_resume_with_overwrite_is_an_error(done, data_dir, tmp_path):
    d = copy(done, tmp_path)
    before = snapshot(d)
    with pytest.raises(RunDirError, match="--resume and --overwrite contradict"): train(tiny(), d, data_dir, resume=True, overwrite=True, **QUIET)
    r = rfwp("train", "listops", *cli_tiny(), "--resume", "--overwrite", "--run-dir", d, "--data-dir", data_dir, timeout=60)
    assert r.returncode == 2 and "contradict" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert snapshot(d) == before

def test_corrupt_config_named(done, data_dir, tmp_path):
    d = copy(done, tmp_path)
    (d / "config.json").write_text('{"lr": 0.1,')
    with pytest.raises(RunFileError, match=r"config.json: is not valid JSON"): train(tiny(), d, data_dir, **QUIET)
    r = rfwp("train", "listops", *cli_tiny(), "--run-dir", d, "--data-dir", data_dir, timeout=60)
    assert r.returncode == 2 and "config.json: is not valid JSON" in r.stderr and "Traceback" not in r.stderr

@pytest.mark.parametrize("where", ["resume", "eval"])
def test_zero_byte_checkpoint(done, data_dir, tmp_path, where):
    "An empty last.pt / best.pt (the code before the run layer raised IndexError while building the message)."
    d = copy(done, tmp_path)
    name = "last.pt" if where == "resume" else "best.pt"
    (d / name).write_bytes(b"")
    before = snapshot(d)
    if where == "resume":
        with pytest.raises(CheckpointError, match="is empty"): train(tiny(), d, data_dir, resume=True, **QUIET)
        r = rfwp("train", "listops", *cli_tiny(), "--resume", "--run-dir", d, "--data-dir", data_dir, timeout=60)
    else: r = rfwp("eval", d, "--data-dir", data_dir, timeout=60)
    assert r.returncode == 2 and f"{name}: is empty (0 bytes)" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert snapshot(d) == before

def test_checkpoint_of_another_model(done, data_dir, tmp_path):
    d = copy(done, tmp_path)
    ck = load_checkpoint(d / "last.pt")
    ck["model"] = {k: torch.zeros(3) for k in list(ck["model"])[:2]}
    save_checkpoint({k: v for k, v in ck.items() if k != "format"}, d / "last.pt")
    with pytest.raises(CheckpointError, match="last.pt: its weights do not fit this model"): train(tiny(), d, data_dir, resume=True, **QUIET)

def test_checkpoint_of_another_version(done, tmp_path):
    d = copy(done, tmp_path)
    ck = torch.load(d / "best.pt", weights_only=True); ck["format"] = "rfwp-checkpoint/1"; torch.save(ck, d / "best.pt")
    r = rfwp("eval", d, timeout=60)
    assert r.returncode == 2 and "another version of rfwp" in r.stderr

def test_failed_writes_leave_no_temp_and_name_the_file(done, data_dir, tmp_path, monkeypatch):
    "A full disk (or a read-only folder: as root, chmod cannot make one) while training: one error naming the file, no temp file."
    d = copy(done, tmp_path)
    real = os.replace
    def full(src, dst):
        if str(dst).endswith("last.pt"): raise OSError(28, "No space left on device")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(RunFileError, match=r"last.pt: cannot be written \(No space left on device\)"):
        train(tiny(steps=9, eval_every=3), d, data_dir, resume=True, **QUIET)
    monkeypatch.undo()
    assert not list(d.glob(".*.tmp")) and load_checkpoint(d / "last.pt")["step"] == 6   # the old checkpoint is whole

def test_unwritable_run_dir(tmp_path, data_dir):
    (tmp_path / "file").write_text("x")
    r = rfwp("train", "listops", *CLI_TINY, "--steps", "2", "--run-dir", tmp_path / "file" / "run", "--data-dir", data_dir, timeout=60)
    assert r.returncode == 2 and "cannot be used as a run directory" in r.stderr and "Traceback" not in r.stderr

def test_atomic_write_temp_names_are_per_process(tmp_path):
    seen = []
    def spy(f): seen.append(Path(f.name).name); f.write(b"x")
    atomic_write(tmp_path / "a.png", spy)
    assert seen[0].startswith(f".a.png.{os.getpid()}-") and seen[0].endswith(".tmp")

# ---------------------------------------------------------------- the other tasks under the same rule

def test_lm_bad_files(tmp_path):
    (tmp_path / "bin.txt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty.tokens").write_text("")
    r = rfwp("train", "lm", "--text", tmp_path / "bin.txt", "--run-dir", tmp_path / "r1", "--cache-dir", tmp_path / "c", "--no-progress", timeout=60)
    assert r.returncode == 2 and "bin.txt: is not UTF-8 text" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = rfwp("train", "lm", "--train", tmp_path / "empty.tokens", "--run-dir", tmp_path / "r2", "--cache-dir", tmp_path / "c", "--no-progress", timeout=60)
    assert r.returncode == 2 and "empty.tokens: the training split is empty" in r.stderr and "Traceback" not in r.stderr, r.stderr

def test_eval_on_an_lm_checkpoint_says_which_command(tmp_path):
    save_checkpoint(dict(kind="lm", config={}, model={}), tmp_path / "best.pt")
    r = rfwp("eval", "listops", tmp_path, timeout=60)
    assert r.returncode == 2 and "is not a checkpoint of ListOps" in r.stderr and "`rfwp eval RUN_DIR` finds the task" in r.stderr
    r = rfwp("eval", tmp_path, timeout=60)                            # the task read from the checkpoint: the LM evaluation
    assert r.returncode == 2 and r.stderr.startswith("rfwp eval lm: error:") and "Traceback" not in r.stderr, r.stderr

def test_atari_refuses_too_many_games():
    pytest.importorskip("ale_py")
    t0 = time.time()
    r = rfwp("train", "atari", "--n-envs", "100000", timeout=60)
    assert r.returncode == 2 and "n_envs: at most 1024 games" in r.stderr and time.time() - t0 < 30

# ---------------------------------------------------------------- helpers

def test_plot_curves_any_columns(tmp_path):
    rows = [dict(update=u, split="train", fps=100 + u, return_mean=float(u)) for u in range(5)]
    fig = plot_curves(rows, tmp_path / "c.png", {"score": "return_mean", "frames/s": "fps"}, x="update")
    assert (tmp_path / "c.png").stat().st_size > 1000 and [len(a.lines) for a in fig.axes] == [1, 1]

def test_lr_schedule_errors():
    with pytest.raises(ValueError, match="schedule: 'step'"): lr_schedule("step", 10)
    with pytest.raises(ValueError, match="steps: must be > 0"): lr_schedule("cosine", 0)

# ---------------------------------------------------------------- nothing silently wrong, nothing lost

class _Blowup:
    "A task that trains a line and whose loss becomes NaN at `bad_step` (as a run that diverges)."
    @staticmethod
    def make(bad_step=5, fail_setup=False, n_steps=8):
        from dataclasses import dataclass, asdict
        from rfwp.run import Task
        @dataclass
        class Cfg:
            steps:int = n_steps
            lr:float = 0.1
            def to_dict(self): return asdict(self)
            def validate(self): return self
        class T(Task):
            resumable, log_every, eval_every, ckpt_every = ("steps",), 1, 2, 2
            def __init__(self, cfg): self.config, self.total = cfg, cfg.steps
            def setup(self, dd, say):
                if fail_setup: raise ValueError("setup: the data could not be read")
                torch.manual_seed(0); self.model = self.net = torch.nn.Linear(1, 1)
                self.opt = torch.optim.SGD(self.model.parameters(), lr=self.config.lr)
                self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_schedule("constant", self.total))
            def train_step(self, step):
                x = torch.linspace(-1, 1, 8)[:, None]; loss = ((self.net(x) - 3 * x) ** 2).mean()
                if step + 1 >= bad_step: loss = loss * float("nan")
                self.opt.zero_grad(); loss.backward(); self.opt.step(); self.sched.step()
                return dict(loss=loss.item(), n=1)
            def evaluate(self): return dict(loss=1.0)
        return T(Cfg())

def test_diverging_run_stops_keeps_its_last_finite_checkpoint(tmp_path):
    "A NaN loss at step 5 stops the run there: an error naming the step, status `diverged`, last.pt of step 4 kept and finite."
    from rfwp.run import fit, DivergedError
    with pytest.raises(DivergedError, match="diverged at step 5: non-finite loss"):
        fit(_Blowup.make(bad_step=5), tmp_path / "r", progress=False, log=lambda *a, **k: None)
    ck = load_checkpoint(tmp_path / "r" / "last.pt")
    assert ck["step"] == 4 and all(torch.isfinite(w).all() for w in ck["model"].values())
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["status"] == "diverged" and res["step"] == 5
    assert all(r["step"] <= 4 for r in json.loads((tmp_path / "r" / "metrics.json").read_text()))

@pytest.mark.parametrize("opt", [["--lr", "inf"], ["--clip", "nan"], ["--weight-decay=-inf"], ["--max-minutes", "inf"]])
def test_non_finite_options_refused(opt, tmp_path):
    r = rfwp("train", "listops", *opt, "--run-dir", tmp_path / "r", "--data-dir", tmp_path / "d", timeout=60)
    assert r.returncode == 2 and "finite" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="finite"): make_config("listops", "laptop", lr=float("inf"))

def test_failed_start_leaves_nothing_that_blocks_the_next(tmp_path):
    "A start that fails before the first step removes the config it wrote: the corrected command then runs."
    from rfwp.run import fit
    with pytest.raises(ValueError, match="could not be read"): fit(_Blowup.make(fail_setup=True), tmp_path / "r", progress=False, log=lambda *a, **k: None)
    assert not (tmp_path / "r" / "config.json").exists()
    c = _Blowup.make(bad_step=99); c.config.lr = 0.05                   # another config in the same folder: not refused
    assert fit(c, tmp_path / "r", progress=False, log=lambda *a, **k: None)["status"] == "done"

def test_run_without_last_pt_is_refused_and_best_pt_kept(data_dir, tmp_path):
    "With last.pt gone, the same command must not start again over best.pt (it did, silently)."
    train(tiny(), tmp_path / "r", data_dir, **QUIET)
    (tmp_path / "r" / "last.pt").unlink()
    before = snapshot(tmp_path / "r")
    for resume, steps in ((True, 9), (False, 6)):
        with pytest.raises(RunDirError, match="best.pt.*no last.pt"): train(tiny(steps=steps), tmp_path / "r", data_dir, resume=resume, **QUIET)
    assert snapshot(tmp_path / "r") == before

def test_stale_temp_files_removed_when_the_lock_is_taken(data_dir, tmp_path):
    "A temp file of a dead process (a SIGKILL during a write) goes at the next start; one of a live process stays."
    train(tiny(), tmp_path / "r", data_dir, stop_at=3, **QUIET)
    dead = tmp_path / "r" / ".curves.png.999999999-0badc0de.tmp"; dead.write_bytes(b"half a png")
    live = tmp_path / "r" / f".metrics.csv.{os.getpid()}-12345678.tmp"; live.write_bytes(b"being written")
    train(tiny(), tmp_path / "r", data_dir, resume=True, **QUIET)
    assert not dead.exists() and live.exists()

def test_stop_at_at_or_below_the_finished_step(data_dir, tmp_path):
    train(tiny(), tmp_path / "r", data_dir, **QUIET)
    with pytest.raises(ValueError, match="already at step 6"): train(tiny(), tmp_path / "r", data_dir, stop_at=4, **QUIET)

def test_resume_refuses_changed_data(data_dir, tmp_path):
    "A run resumed on a dataset file that changed since it started is refused, naming the file (it went on silently)."
    import shutil
    shutil.copytree(data_dir, tmp_path / "data")
    train(tiny(), tmp_path / "r", tmp_path / "data", stop_at=3, **QUIET)
    f = next((tmp_path / "data").glob("listops-*/valid.txt"))
    lines = f.read_text().splitlines(True); f.write_text("".join(lines[1:] + lines[:1]))    # the same samples, another order
    with pytest.raises(ValueError, match=r"data changed since this run started \(.*valid.txt\)"):
        train(tiny(), tmp_path / "r", tmp_path / "data", resume=True, **QUIET)
