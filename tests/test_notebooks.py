"""The notebooks are committed with their outputs, as a reader should see them (on GitHub and on the site, which
renders the stored outputs): every cell that prints, plots or shows a value has them, and they are tidy."""
import ast, json, re, tomllib
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted(p for p in (ROOT/"nbs").glob("*.ipynb") if not p.name.startswith(("_", ".")))
FLAGS = tomllib.loads((ROOT/"pyproject.toml").read_text())["tool"]["nbdev"]["tst_flags"].split()   # such cells need not have run

def _flagged(src): return any(l.startswith("#|") and set(l[2:].split()) & set(FLAGS) for l in src.splitlines())

def _shows_something(src):
    """A cell whose code prints, plots or ends in a bare value (a name, an attribute, an item, a table): Jupyter shows it.
    Exported cells are library code: they define, they do not show."""
    if re.search(r"^#\|\s*export", src, re.M): return False
    try: tree = ast.parse("\n".join(l for l in src.splitlines() if not l.startswith(("#|", "%", "!"))))
    except SyntaxError: return False
    run = [s for s in tree.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]   # what the cell runs, not defines
    calls = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "") for s in run for n in ast.walk(s) if isinstance(n, ast.Call)}
    top_print = any(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and getattr(s.value.func, "id", "") == "print" for s in tree.body)
    last = tree.body[-1] if tree.body else None
    bare = isinstance(last, ast.Expr) and isinstance(last.value, (ast.Name, ast.Attribute, ast.Subscript, ast.Tuple, ast.Constant, ast.JoinedStr))
    return top_print or bare or bool(calls & {"plot_curves", "plot_lines", "Image", "display", "Markdown"})

PATH = re.compile(r"\S*(/work/|/home/|/tmp/|/root/|site-packages)\S*")
WARNING = re.compile(r".*\b\w+Warning\b.*")

def _text(o):
    t = o.get("text") if o.get("output_type") == "stream" else "".join("".join(v) if isinstance(v, list) else v
                                                                      for k, v in (o.get("data") or {}).items() if k.startswith("text/"))
    return "".join(t) if isinstance(t, list) else (t or "")

@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.stem)
def test_notebook_stores_its_outputs(nb):
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    missing = [c.get("id") for c in cells if not _flagged("".join(c["source"])) and _shows_something("".join(c["source"])) and not c.get("outputs")]
    assert not missing, f"{nb.name}: cells without their outputs {missing}: run `python tools/run_notebook.py nbs/{nb.name}`"
    if any(_shows_something("".join(c["source"])) for c in cells):
        assert any(c.get("outputs") for c in cells), f"{nb.name} stores no outputs"

@pytest.mark.parametrize("nb", NBS, ids=lambda p: p.stem)
def test_notebook_outputs_are_tidy(nb):
    "No errors, no machine paths, no progress-bar frames, no warnings, no execution counts in what a reader sees."
    bad = []
    for c in json.loads(nb.read_text())["cells"]:
        for o in c.get("outputs", []):
            t = _text(o)
            if o.get("output_type") == "error": bad.append(f"{c.get('id')}: an error ({o.get('ename')})")
            if m := PATH.search(t): bad.append(f"{c.get('id')}: a machine path: {m[0]}")
            if "\r" in t: bad.append(f"{c.get('id')}: progress-bar frames (a carriage return)")
            if m := WARNING.search(t): bad.append(f"{c.get('id')}: a warning: {m[0][:100]}")
            if o.get("execution_count") is not None: bad.append(f"{c.get('id')}: an execution count (run nbdev-clean)")
    assert not bad, f"{nb.name}:\n" + "\n".join(bad)
