"""Re-execute notebooks in place and store their outputs, as a reader should see them (on GitHub and on the site).

    python tools/run_notebook.py nbs/02_delta_rule.ipynb              # run it; slow/cuda cells keep their stored outputs
    python tools/run_notebook.py nbs/10_benchmarks.ipynb --flags slow  # also run the `slow` cells, store and print their results
    python tools/run_notebook.py nbs/09_atari.ipynb --flags slow --cells ppovs002   # of the slow cells, only this one
    python tools/run_notebook.py --all                                 # every notebook of nbs/

Cells run top to bottom in a fresh IPython shell (execnb, as `nbdev-test` runs them), in nbs/, with
IN_TEST unset so progress and results print as they would for a reader. The cells `nbdev-test` leaves out are left
out (`#| eval: false`), and a cell flagged with a `tst_flags` flag of pyproject.toml (slow, cuda) runs
only when its flag is given; otherwise its stored output stays as it is. Outputs are then tidied: a progress bar keeps only its last state,
absolute paths of this checkout become relative ones, and warnings are reported (fix them at their
source: they are not hidden). Finally `nbdev-clean` strips execution counts and metadata.
A notebook that raises is left unchanged and the command exits with status 1."""
import argparse, os, re, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/"nbs"

def _tidy_text(s:str) -> str:
    """Keep the last state of every carriage-return-rewritten line; write paths of this checkout relative to nbs/,
    and a notebook's temporary folder (`tmp = Path(tempfile.mkdtemp())`) as `tmp/`."""
    s = "\n".join(line.rsplit("\r", 1)[-1] for line in s.split("\n"))
    s = re.sub(re.escape(tempfile.gettempdir()) + r"/tmp[\w-]{6,}(/|\b)", "tmp/", s)
    for base, rel in ((NBS, "."), (ROOT, ".."), (ROOT.parent/"shared", "../../shared")):
        s = s.replace(str(base) + "/", rel + "/").replace(str(base), rel)
    return s

def tidy(nb) -> list[str]:
    "Tidy every output of `nb` in place; return the warnings found (cell id: first line)."
    warnings = []
    for c in nb.cells:
        if c.cell_type != "code": continue
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream":
                text = "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
                o["text"] = _tidy_text(text)
                warnings += [f"{c.get('id')}: {l.strip()}" for l in o["text"].splitlines() if re.search(r"\w+Warning\b", l)]
            for k, v in (o.get("data") or {}).items():
                if k.startswith("text/") and isinstance(v, (str, list)):
                    o["data"][k] = _tidy_text("".join(v) if isinstance(v, list) else v)
    return warnings

def run(path:Path, flags:list[str], cells:list[str]=()) -> int:
    """Execute notebook `path` in place (cells flagged with other flags keep their outputs; with `cells`, so do the
    flagged cells whose ids are not in it); 0 on success."""
    from fastcore.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.config import get_config
    path = path.resolve()
    cfg = get_config(path.parent)
    all_flags = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags or [])
    from nbdev.process import NBProcessor
    from nbdev.test import _skip_cell   # nbdev-test's predicate: the flags, `#| eval: false`, `skip_exec`
    nb = read_nb(path)
    proc = NBProcessor(path, rm_directives=False, process=True).nb
    nbdev_skips = _skip_cell(proc, all_flags, flags)
    not_run = {c.get("id") for c in proc.cells if nbdev_skips(c)}
    def flagged(c):   # the `#| slow` style flags of a cell
        first = [l for l in c.source.splitlines() if l.startswith("#|")]
        return {w for l in first for w in l[2:].split() if w in all_flags}
    missing = set(cells) - {c.get("id") for c in nb.cells}
    if missing:
        sys.stderr.write(f"{path.name}: no cell with id {', '.join(sorted(missing))}\n"); return 1
    def skip(c): return c.cell_type != "code" or c.get("id") in not_run or bool(cells and flagged(c) and c.get("id") not in cells)
    kept = {c.get("id"): c.get("outputs", []) for c in nb.cells if c.cell_type == "code" and skip(c)}
    os.environ.pop("IN_TEST", None)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    sys.path.insert(0, str(cfg.config_path))
    os.chdir(path.parent)
    sys.argv = [str(path)]   # as in a kernel: a cell that parses sys.argv must not see this script's options
    t = time.time()
    shell = CaptureShell(path)
    try: shell.run_all(nb, exc_stop=True, preproc=skip, cell_timeout=cfg.cell_timeout or None)
    except (Exception, SystemExit):
        sys.stderr.write(f"{path.name}: failed, left unchanged\n" + (shell.prettytb(fname=path) or "") + "\n")
        return 1
    for c in nb.cells:
        if c.get("id") in kept: c["outputs"] = kept[c.get("id")]
    warnings = tidy(nb)
    write_nb(nb, path)
    subprocess.run(["nbdev-clean", "--fname", str(path)], check=True, cwd=ROOT)
    n = sum(bool(c.get("outputs")) for c in nb.cells if c.cell_type == "code")
    print(f"{path.name}: {time.time() - t:.0f} s, {n} cells with outputs" + (f", {len(kept)} flagged cells kept" if kept else ""))
    for w in warnings: print(f"  warning in cell {w}")
    for c in nb.cells:   # what the cells run for --flags printed: the results a README row cites
        if c.cell_type == "code" and flagged(c) & set(flags):
            for o in c.get("outputs", []):
                text = o.get("text") if o.get("output_type") == "stream" else (o.get("data") or {}).get("text/plain")
                if text: print("".join(text) if isinstance(text, list) else text, end="" if str(text).endswith("\n") else "\n")
    return 0

def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python tools/run_notebook.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (paths)")
    ap.add_argument("--all", action="store_true", help="every notebook of nbs/ (those starting with _ left out)")
    ap.add_argument("--flags", default="", help="space- or comma-separated tst_flags whose cells also run (and print), e.g. 'slow'")
    ap.add_argument("--cells", default="", help="comma-separated cell ids: of the flagged cells, run only these (the others keep their outputs)")
    return ap

def main(argv=None) -> int:
    ap = make_parser()
    a = ap.parse_args(argv)
    nbs = sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith(("_", "."))) if a.all else a.notebooks
    if not nbs: ap.error("name notebooks, or --all")
    for p in nbs:
        if not p.is_file() or p.suffix != ".ipynb": ap.error(f"{p}: not a notebook file")
    flags = [f for f in re.split(r"[ ,]+", a.flags) if f]
    status = 0
    for p in nbs:   # one process per notebook: a fresh shell and fresh imports each time
        r = subprocess.run([sys.executable, __file__, "--one", str(p.resolve()), "--flags", ",".join(flags), "--cells", a.cells])
        status |= r.returncode
    return status

if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        sys.exit(run(Path(sys.argv[2]), [f for f in sys.argv[4].split(",") if f], [c for c in sys.argv[6].split(",") if c]))
    sys.exit(main())
