"""The shape of the package: no import circles, and a command line that knows no task (a new task touches only its module)."""
import ast
from pathlib import Path
from rfwp.tasks import load_builtin

PKG = Path(__file__).resolve().parents[1] / "rfwp"

def _imports(path:Path, name:str, mods:set) -> set:
    "The rfwp modules that `path` imports, anywhere in it (module level or inside functions)."
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            base = pkg.split(".")[:len(pkg.split(".")) - (n.level - 1)] if n.level else []
            m = ".".join(base + ([n.module] if n.module else [])) if n.level else (n.module or "")
            cands = [m] + [f"{m}.{a.name}" for a in n.names]
        elif isinstance(n, ast.Import): cands = [a.name for a in n.names]
        else: continue
        out |= {c for c in cands if c in mods and c != name}
    return out

def test_no_import_circles():
    files = {".".join(p.relative_to(PKG.parent).with_suffix("").parts).replace(".__init__", ""): p
             for p in PKG.rglob("*.py") if p.name != "_modidx.py"}
    graph = {m: _imports(p, m, set(files)) for m, p in files.items()}
    def path_back(start):
        seen, todo = set(), [(start, [start])]
        while todo:
            m, trail = todo.pop()
            for d in graph[m]:
                if d == start: return trail + [d]
                if d not in seen: seen.add(d); todo.append((d, trail + [d]))
    circles = [c for m in graph if (c := path_back(m))]
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)

def test_the_command_line_names_no_task():
    "No string in rfwp/cli.py's code is the name of a task or of a task's own command or benchmark: they come from the faces."
    faces = load_builtin()
    names = set(faces) | {c for f in faces.values() for c in (*f.commands, *f.benches)}
    tree = ast.parse((PKG / "cli.py").read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = sorted({n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                    and id(n) not in docs and n.value in names})
    assert not found, f"rfwp/cli.py names tasks or their commands: {found}"
