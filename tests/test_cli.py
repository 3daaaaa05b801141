"The `rfwp` command: help, early failures with the valid choices, run-directory safety, eval, bench."
import contextlib, io, json, re, subprocess, sys, tomllib
from dataclasses import fields
from pathlib import Path
import pytest
from rfwp.cli import main, make_parser, train_parser, eval_parser
from rfwp.tasks import load_builtin, get_task
from rfwp.tasks.algorithmic import TrainConfig, PRESETS
from rfwp.run import SCHEDULES
from rfwp.layers import LAYERS

def run(*argv):
    "Call `main` in-process; return (exit status, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: code = main(list(argv))
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()

def tiny(steps=6):
    return ["--depth", "3", "--n-train", "256", "--n-valid", "32", "--n-test", "32", "--n-layers", "1", "--d-model", "16",
            "--n-heads", "2", "--ff-dim", "32", "--batch-size", "16", "--steps", str(steps), "--eval-every", "3",
            "--warmup", "2", "--threads", "1", "--no-progress"]
TINY = tiny()

# ---------------------------------------------------------------- help

def test_console_scripts_declared():
    p = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert p["project"]["scripts"] == {"rfwp": "rfwp.cli:main"}

def test_help_lists_every_option():
    r = subprocess.run([sys.executable, "-m", "rfwp.cli", "train", "listops", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    h = re.sub(r"\s+", " ", r.stdout)
    others = {"n_vars", "n_statements", "trace", "lang", "train_len"}          # the fields of the other algorithmic tasks
    for f in fields(TrainConfig):
        if f.name == "task": continue
        assert (f"--{f.name.replace('_', '-')} " in h) == (f.name not in others), f.name
    for opt in ("--preset", "--run-dir", "--data-dir", "--resume", "--overwrite", "--device", "--threads", "--no-progress", "--stop-at"):
        assert opt in h
    for name in [*PRESETS, *LAYERS]: assert name in h
    from rfwp.tasks.algorithmic import make_config
    assert f"laptop: {make_config('listops', 'laptop').lr}" in h and "paper: 0.0003" in h   # the presets' values are shown
    r = subprocess.run([sys.executable, "-m", "rfwp.cli", "train", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and all(t in r.stdout for t in load_builtin())
    # every option of every task has a help text
    for face in load_builtin().values():
        for p in (train_parser(face), eval_parser(face)):
            for a in p._actions: assert a.help, (face.name, a.option_strings)
    for a in make_parser(load_builtin())._actions: assert a.help, a.option_strings

def test_help_shows_each_tasks_own_defaults():
    "`rfwp train codeexec --help` shows the values code execution runs with, not ListOps' (they differed before the registry)."
    h = re.sub(r"\s+", " ", train_parser(get_task("codeexec")).format_help())
    for opt, laptop in (("n-statements", 10), ("n-layers", 3), ("n-train", 50000), ("steps", 9600), ("trace", 1.0), ("eval-every", 800)):
        assert re.search(rf"--{opt} .*?\[paper: [^,\]]+, laptop: {laptop}\]", h), opt
    assert "--depth" not in h and "--lang" not in h
    assert "programs of 10 statements" in h and "9-minute" not in h            # the preset's reason for this task, short and current
    for face in load_builtin().values():
        for name, pr in face.presets.items(): assert len(pr.reason(face.preset_task)) <= 500, (face.name, name)

def test_presets_have_no_wall_clock_guard():
    "A preset defines its work in steps: the same command gives the same model on a fast and on a busy machine."
    for face in load_builtin().values():
        for name in face.presets: assert not face.defaults(name).get("max_minutes"), (face.name, name)

def test_top_level_and_eval_help():
    code, out, _ = run("--help")
    assert code == 0 and all(c in out for c in ("train", "eval", "bench"))
    code, out, _ = run("eval", "listops", "--help")
    assert code == 0 and all(o in out for o in ("--checkpoint", "--split", "--data-dir", "--json"))

def test_bench_delegates():
    code, out, err = run("bench", "ops", "--help")
    assert code == 0 and "--shapes" in out

@pytest.mark.parametrize("argv,prog,word", [
    (["train", "lm", "--help"], "rfwp train lm", "--text"),
    (["eval", "lm", "--help"], "rfwp eval lm", "--split"),
    (["generate", "--help"], "rfwp generate", "--temperature"),
    (["train", "atari", "--help"], "rfwp train atari", "--game"),
    (["eval", "atari", "--help"], "rfwp eval atari", "--episodes"),
])
def test_tasks_with_options_of_their_own(argv, prog, word):
    "`rfwp train lm ...` etc. have parsers of their own (built in rfwp.cli from the tasks' faces)."
    r = subprocess.run([sys.executable, "-m", "rfwp.cli", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: {prog}") and word in r.stdout, r.stdout[:300]

# ---------------------------------------------------------------- early failures

@pytest.mark.parametrize("argv,choices", [
    (["train", "sorting"], ["listops", "codeexec", "formal", "lm", "atari"]),
    (["train", "listops", "--model", "gru"], LAYERS),
    (["train", "listops", "--preset", "huge"], PRESETS),
    (["train", "listops", "--schedule", "exponential"], SCHEDULES),
    (["train", "listops", "--device", "tpu"], ["auto", "cpu", "cuda"]),
    (["eval", "listops", "x", "--split", "dev"], ["test", "valid", "train"]),
    (["eval", "no-such-run"], ["listops", "lm", "atari", "best.pt"]),
    (["frobnicate"], ["train", "eval", "bench"]),
])
def test_bad_names_list_valid_choices(argv, choices):
    code, out, err = run(*argv)
    assert code == 2
    for c in choices: assert repr(c) in err or c in err

@pytest.mark.parametrize("argv,word", [
    (["--lr", "-1"], "--lr"), (["--steps", "0"], "--steps"), (["--dropout", "1.5"], "--dropout"),
    (["--batch-size", "x"], "--batch-size"), (["--d-model", "100", "--n-heads", "3"], "n_heads"),
    (["--depth", "40"], "depth"), (["--n-vars", "0"], "--n-vars"),
])
def test_bad_values_fail_at_once(argv, word, tmp_path):
    code, out, err = run("train", "listops", *argv, "--run-dir", str(tmp_path / "r"), "--data-dir", str(tmp_path / "d"))
    assert code == 2 and word in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()   # nothing was started

@pytest.mark.parametrize("argv,word", [
    (["bench", "ops", "--impls", "naive,fast"], "--impls"),
    (["bench", "ops", "--json", "{tmp}/missing/x.json"], "--json"),
    (["bench", "ops", "--json", "{tmp}"], "is a folder"),
    (["bench", "formal", "--json", "{tmp}/missing/x.json"], "--json"),
    (["bench", "lm-speed", "--out", "{tmp}/missing/x"], "--out"),
    (["eval", "atari", "{tmp}", "--json", "{tmp}/missing/x.json"], "--json"),
])
def test_bad_bench_options_fail_before_any_work(argv, word, tmp_path):
    "An output file that cannot be written, or an unknown impl, fails in one line before the benchmark runs (not after it)."
    code, out, err = run(*[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and word in err and "Traceback" not in err, err
    assert out == ""                                                  # no table: nothing was measured
    assert not (tmp_path / "missing").exists()

# ---------------------------------------------------------------- runs

@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    code, out, err = run("train", "listops", *TINY, "--run-dir", str(d / "run"), "--data-dir", str(d / "data"))
    assert code == 0, err
    return d, out

def test_train_prints_test_accuracy_and_plot(done_run):
    d, out = done_run
    assert re.search(r"test accuracy \d+\.\d\d%", out) and "curves.png" in out
    assert (d / "run" / "curves.png").stat().st_size > 1000

def test_same_command_again_continues(done_run, tmp_path):
    "Running a finished run's command again resumes it: nothing to train, the test is reported again."
    import shutil
    d, _ = done_run
    shutil.copytree(d / "run", tmp_path / "run")
    code, out, err = run("train", "listops", *TINY, "--run-dir", str(tmp_path / "run"), "--data-dir", str(d / "data"))
    assert code == 0, err
    assert "resuming" in out and "test accuracy" in out
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test_acc"] == json.loads((d / "run" / "results.json").read_text())["test_acc"]

def test_different_config_refused(done_run):
    d, _ = done_run
    before = {f.name: f.read_bytes() for f in (d / "run").iterdir()}
    code, out, err = run("train", "listops", *TINY, "--lr", "0.05", "--run-dir", str(d / "run"), "--data-dir", str(d / "data"))
    assert code == 2 and "different config" in err and "lr" in err and "--overwrite" in err
    assert before == {f.name: f.read_bytes() for f in (d / "run").iterdir()}

def test_overwrite_and_resume(done_run, tmp_path):
    d, _ = done_run
    import shutil
    shutil.copytree(d / "run", tmp_path / "run")
    args = ["--run-dir", str(tmp_path / "run"), "--data-dir", str(d / "data")]
    code, out, err = run("train", "listops", *tiny(steps=9), "--resume", *args)
    assert code == 0, err
    assert "resuming" in out and json.loads((tmp_path / "run" / "results.json").read_text())["step"] == 9
    code, out, err = run("train", "listops", *TINY, "--lr", "0.05", "--overwrite", *args)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 0.05

def test_resume_without_run(tmp_path):
    code, out, err = run("train", "listops", *TINY, "--resume", "--run-dir", str(tmp_path / "none"), "--data-dir", str(tmp_path / "d"))
    assert code == 2 and "no run to resume" in err

def test_eval(done_run):
    d, _ = done_run
    res = json.loads((d / "run" / "results.json").read_text())
    code, out, err = run("eval", str(d / "run"), "--data-dir", str(d / "data"), "--json", "--threads", "1")
    assert code == 0, err
    m = json.loads(out)
    assert m["acc"] == res["test_acc"] and m["split"] == "test" and m["n"] == 32
    code, out, err = run("eval", str(d / "run"), "--data-dir", str(d / "data"), "--checkpoint", "last", "--split", "valid")
    assert code == 0 and "valid accuracy" in out

def test_eval_bad_checkpoint(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"oops")
    code, out, err = run("eval", str(tmp_path))
    assert code == 2 and "truncated" in err
    code, out, err = run("eval", str(tmp_path / "nothing"))
    assert code == 2 and "neither a task" in err and "Traceback" not in err
    code, out, err = run("eval", "listops", str(tmp_path / "nothing"))
    assert code == 2 and "no such checkpoint" in err

# ---------------------------------------------------------------- a new task touches only its own module

TINY_TASK = """
import torch
from dataclasses import dataclass, asdict
from rfwp.run import Task, Preset, fit, lr_schedule, make_config, load_checkpoint, add_load_args
from rfwp.tasks import TaskFace, register

@dataclass
class LineConfig:
    lr:float = 0.1 # SGD learning rate
    steps:int = 20 # optimiser steps
    def to_dict(self): return asdict(self)
    def validate(self): return self

class Line(Task):
    resumable, log_every = ("steps",), 1
    def __init__(self, cfg): self.config, self.total = cfg, cfg.steps
    def setup(self, dd, say):
        torch.manual_seed(0); self.model = self.net = torch.nn.Linear(1, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=self.config.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_schedule("constant", self.total))
    def train_step(self, step):
        x = torch.linspace(-1, 1, 16)[:, None]; loss = ((self.net(x) - (3 * x - 1)) ** 2).mean()
        self.opt.zero_grad(); loss.backward(); self.opt.step(); self.sched.step()
        return dict(loss=loss.item(), n=1)
    def checkpoint_extra(self): return dict(kind="line")

def evaluate(a):
    w = load_checkpoint(a.run_dir + "/last.pt")["model"]; print(f"y = {w['weight'].item():.4f} x {w['bias'].item():+.4f}"); return 0

PRESETS = dict(laptop=Preset("enough steps for a line", dict(steps=20)))
register(TaskFace("line", "fit y = 3x - 1", LineConfig, PRESETS, ("steps",), lambda preset, **kw: make_config(LineConfig, PRESETS, preset, **kw),
                  lambda cfg, run_dir, **kw: fit(Line(cfg), run_dir, **kw), lambda cfg, preset: f"line-{preset}", evaluate, kind="line",
                  options=lambda p, command: add_load_args(p, "rfwp train line") if command == "eval" else None))
"""

def test_a_new_task_touches_only_its_module(tmp_path):
    "A task of a dozen lines, defined outside the package, trains, resumes and evaluates through `rfwp train|eval` once registered."
    (tmp_path / "linetask.py").write_text(TINY_TASK)
    def rfwp(*argv):
        code = "import sys, linetask; from rfwp.cli import main; sys.exit(main(sys.argv[1:]))"
        return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    r = rfwp("train", "line", "--help")
    assert r.returncode == 0 and "[laptop: 20]" in re.sub(r"\s+", " ", r.stdout) and "--stop-at" in r.stdout
    r = rfwp("train", "line", "--stop-at", "7", "--no-progress")
    assert r.returncode == 0 and (tmp_path / "runs" / "line-laptop" / "last.pt").exists(), r.stderr
    r = rfwp("train", "line", "--steps", "60", "--resume", "--no-progress")
    assert r.returncode == 0 and "resuming" in r.stdout + r.stderr, r.stderr
    assert json.loads((tmp_path / "runs" / "line-laptop" / "results.json").read_text())["step"] == 60
    for argv in (("eval", "line", "runs/line-laptop"), ("eval", "runs/line-laptop")):
        r = rfwp(*argv)
        assert r.returncode == 0, r.stderr
        w, b = re.match(r"y = (\S+) x (\S+)", r.stdout).groups()
        assert abs(float(w) - 3) < 0.05 and abs(float(b) + 1) < 0.05, r.stdout
