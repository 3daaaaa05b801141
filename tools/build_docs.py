"""Build the rfwp website into `docs/` from the notebooks and their stored outputs, offline, without Quarto.

    python tools/build_docs.py                      # render the committed notebooks into docs/
    python tools/build_docs.py --check --out DIR    # CI: the same into DIR; fail when docs/ differs from it
    python tools/build_docs.py --check-only         # just compare docs/_manifest.json with the notebooks

`nbdev-docs` needs Quarto, which cannot be installed here; the nbdev configuration stays for users
who have it. This script renders the same notebooks with Sphinx + MyST-NB (the `docs` extra), from the
outputs the notebooks store, as `nbdev-docs` does (`tools/run_notebook.py` re-executes a notebook and
stores them; `nbdev-test` is what runs them in CI):

1. **show_doc**: nbdev's `add_show_docs` puts a `show_doc` cell under every export, and those cells alone
   run, in a fresh process per notebook whose namespace holds the modules the notebook exports to; every
   other cell keeps its stored output. Cells flagged with a `tst_flags` flag of pyproject.toml (slow, cuda)
   are labelled on the page: with the output stored from a real run, or as not run;
2. **process** them with nbdev's doc processors (those of `nbdev-proc-nbs`: frontmatter, `#| hide`,
   symbol links, ...), except that exported code stays visible (this is a course) and show_doc
   cells are not re-run; Quarto cell options become MyST-NB tags, links point into this site;
3. write one **API page per module** of `rfwp._modidx`: every name of its `__all__` (and public
   methods) with signature, docstring and a docments table (one row per parameter);
4. render with **Sphinx** (furo theme; MathJax served from the site) into docs/, and write
   docs/_manifest.json: a hash of every notebook's cells and stored outputs and of this script.

show_doc renders through `install_renderer`: an anchor per symbol, a source link, the signature,
the docstring and the parameter table. docs/ is a function of the committed notebooks and this script:
`--check` rebuilds into another folder and fails when any file differs from the committed docs/.
`python -m pytest tests/test_docs.py` checks a site in headless chromium ($RFWP_DOCS_DIR, default docs/)."""
import argparse, hashlib, json, os, re, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, DOCS, BUILD = ROOT/"nbs", ROOT/"docs", ROOT/"build"/"docs"
EXEC_VERSION = 7  # bump when exec_one changes what it stores, so --reuse re-executes
SITE_URL = "https://rfwp.github.io/rfwp/"  # nbdev's doc_host + doc_baseurl: its symbol links start with it

# ---------------------------------------------------------------- notebooks and their order
def notebooks(nbs=NBS):
    "Every notebook of the site: index first, then the course in file-name order (`_` scratch ones left out)."
    nbs = sorted(p for p in nbs.glob("*.ipynb") if not p.name.startswith(("_", ".")))
    return sorted(nbs, key=lambda p: (p.stem != "index", p.name))

def source_hash(nb_path):
    "sha256 of a notebook's cells, their stored outputs included: what the page is built from."
    nb = json.loads(Path(nb_path).read_text())
    cells = [[c["cell_type"], "".join(c["source"]), c.get("outputs", [])] for c in nb["cells"]]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False, sort_keys=True).encode()).hexdigest()

def manifest():
    "What docs/ is built from; `--check` compares it with the committed docs/_manifest.json."
    return {"generator": "tools/build_docs.py", "script": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
            "notebooks": {p.name: source_hash(p) for p in notebooks()}}

# ---------------------------------------------------------------- 1. render the API docs (one process per notebook)
def exec_one(src, dst):
    """Save notebook `src` with its stored outputs to `dst`, after nbdev's `add_show_docs` has put a `show_doc` cell
    under every export and those cells alone have run (in the namespace of the modules the notebook exports to).
    No other cell runs: the page shows what the committed notebook stores (`tools/run_notebook.py` refreshes it)."""
    from nbdev.config import get_config
    from nbdev.process import NBProcessor
    from nbdev.processors import add_show_docs
    from execnb.shell import CaptureShell
    from fastcore.nbio import write_nb
    src, dst = Path(src).resolve(), Path(dst).resolve()
    cfg = get_config(src.parent)
    flags = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags or [])
    nb = NBProcessor(src, procs=[add_show_docs], rm_directives=False, process=True).nb
    for i, c in enumerate(nb.cells):
        if not c.get("id"): c["id"] = f"showdoc-{i}"
    global NB_MODULE
    mods = [m[1] for c in nb.cells if c.cell_type == "code"
            for m in re.finditer(r"^#\|\s*(?:default_exp|exports?|exporti)\s+([\w.]+)\s*$", c.source, re.M)]
    mods = [m if m.startswith(cfg.lib_name + ".") else f"{cfg.lib_name}.{m}" for m in dict.fromkeys(mods)]
    NB_MODULE = mods[0] if mods else None
    sys.path.insert(0, str(cfg.config_path))
    install_renderer()
    k = CaptureShell(src)
    k.run_cell("from nbdev.showdoc import show_doc\nimport importlib")
    for m in reversed(mods):   # every name of the modules, private ones too: show_doc's targets
        k.run_cell(f"globals().update({{k: v for k, v in vars(importlib.import_module({m!r})).items() if not k.startswith('__')}})")
    os.chdir(src.parent)
    for c in nb.cells:
        if getattr(c, "has_sd", False):
            k.cell(c)
            if any(o.get("output_type") == "error" for o in c.get("outputs", [])):
                sys.stderr.write(f"{src.name}: {c.source}: {k.prettytb(fname=src) or 'failed'}\n"); return 1
    def flagged(c): return c.cell_type == "code" and bool((getattr(c, "directives_", {}) or {}).keys() & set(flags))
    not_run = [c.id for c in nb.cells if flagged(c) and not c.get("outputs")]
    stored = [c.id for c in nb.cells if flagged(c) and c.get("outputs")]
    nb.metadata["rfwp_docs"] = {"source_sha256": source_hash(src), "skipped_cells": not_run, "stored_cells": stored,
                                "flags": flags, "exec": EXEC_VERSION}
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, dst)
    return 0

def execute_all(nbs, out, workers, reuse=False):
    "Render the show_doc cells of `nbs` into `out`, `workers` at a time; return {name: seconds}. Exit on the first failure."
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.ipynb"):
        if stale.name not in {p.name for p in nbs}: stale.unlink()
    def run(p):
        dst = out/p.name
        if reuse and dst.exists():
            meta = json.loads(dst.read_text()).get("metadata", {}).get("rfwp_docs", {})
            if meta.get("source_sha256") == source_hash(p) and meta.get("exec") == EXEC_VERSION: return p.name, 0.0, 0, "reused"
        t = time.time()
        r = subprocess.run([sys.executable, __file__, "--exec-one", str(p), str(dst)], capture_output=True, text=True,
                           env={**os.environ, "MPLBACKEND": "Agg"})
        return p.name, time.time() - t, r.returncode, r.stderr
    failed = []
    with ThreadPoolExecutor(workers) as ex:
        times = {}
        for name, t, rc, err in ex.map(run, nbs):
            times[name] = t
            print(f"  {name:32s} {'reused' if err == 'reused' else f'{t:6.1f} s'}{'  FAILED' if rc else ''}", flush=True)
            if rc: failed.append(name); sys.stderr.write(f"--- {name}\n{err[-6000:]}\n")
    if failed: sys.exit(f"show_doc cells failed: {', '.join(failed)}")
    return times

# ---------------------------------------------------------------- 2. nbdev processing, then Quarto options -> MyST-NB
def _anchor(name): return name.lower()  # nbdev's _modidx anchors: lower-case qualified name

NB_MODULE = None  # the module the executing notebook exports to (its default_exp): where its cells' definitions live

def source_link(sym):
    """Link to the definition of `sym` in the repository's package (nbdev's lookup goes by name, which two modules
    can share). A symbol defined by a notebook cell has no file (`<ipython-input-...>`): link to its exported copy."""
    import importlib, inspect
    from rfwp._modidx import d
    def where(s):
        s = inspect.unwrap(s)
        return Path(inspect.getsourcefile(s)).resolve(), inspect.getsourcelines(s)[1]
    try:
        f, line = where(sym)
        if not f.is_file() and NB_MODULE:
            obj = importlib.import_module(NB_MODULE)
            for part in sym.__qualname__.split("."): obj = getattr(obj, part)
            f, line = where(obj)
        rel = f.relative_to(ROOT).as_posix()
    except (TypeError, OSError, ValueError, AttributeError, ImportError): return None
    if not f.is_file(): return None
    return f"{d['settings']['git_url']}/blob/{d['settings']['branch']}/{rel}#L{line}"

_TEX_SUB = re.compile(r"(?<![\w$\\])([A-Za-z][A-Za-z]?)_\{([^{}$`]+)\}")   # S_{t-1}, R_{g,t}: a subscript in braces

def _md_text(s):
    """Escape tag-like `<` outside code spans (a docstring's `runs/<task>` is text, not an HTML tag), and typeset
    a braced subscript (`S_{t-1}`) as maths, which plain text would show raw (a one-character one, `S_t`, stays
    text: parameter names such as `R_q` share its form)."""
    return "".join(p if p.startswith("`") else _TEX_SUB.sub(r"$\1_{\2}$", re.sub(r"<(?=[A-Za-z/!?])", "&lt;", p))
                   for p in re.split(r"(`[^`]*`)", s))

def _doc_md(doc):
    """A docstring as markdown: its doctest examples (a `>>>` line up to the next blank line) become `pycon` code
    blocks, the rest goes through `_md_text`."""
    out, block, text = [], None, []
    def flush_text():
        if text: out.append(_md_text("\n".join(text))); text.clear()
    for line in doc.splitlines() + [""]:
        if block is None and line.startswith(">>>"): flush_text(); block = [line]
        elif block is not None and line.strip(): block.append(line)
        elif block is not None: out.append("```pycon\n" + "\n".join(block) + "\n```"); block = None; text.append(line)
        else: text.append(line)
    flush_text()
    return "\n".join(out).rstrip("\n")

def _autograd_signature(sym):
    "`Fn.apply(a, b, ...)` for a torch.autograd.Function subclass (its own signature is `*args, **kwargs`), else None."
    import inspect
    try:
        import torch
        if not (inspect.isclass(sym) and issubclass(sym, torch.autograd.Function)): return None
        params = list(inspect.signature(sym.forward).parameters.values())[1:]   # without ctx
    except (ImportError, TypeError, ValueError): return None
    return f"{sym.__name__}.apply({', '.join(str(p) for p in params)})"

def _own_doc(sym):
    "The docstring `sym` itself has: none inherited (torch's `Function.forward` essay), no dataclass stand-in."
    import inspect
    if inspect.isclass(sym):
        d = vars(sym).get("__doc__")
        if d and d.startswith(sym.__name__ + "("): d = None
    else: d = getattr(sym, "__doc__", None)
    return inspect.cleandoc(d) if isinstance(d, str) and d.strip() else None

def install_renderer():
    "Make show_doc render anchor + signature + docstring + a docments table (one row per parameter)."
    import inspect
    import nbdev.showdoc as sd
    from fastcore.docments import DocmentTbl, _ital_first
    class SiteRenderer(sd.BasicMarkdownRenderer):
        "show_doc for the offline site: explicit anchor, source link, signature, docstring, parameter table."
        def _repr_markdown_(self):
            md = f'{"#" * self.title_level} {self.nm}\n\n<span id="{_anchor(self.nm)}" class="rfwp-anchor"></span>'
            src = source_link(self.sym)
            if src: md += f'<a class="rfwp-source" href="{src}">source</a>'
            sig = f"```python\n{_autograd_signature(self.sym) or str(self.dm).replace(':NoneType=', '=')}\n```"
            if inspect.isclass(self.sym): sig = sig.replace("```python\ndef ", "```python\nclass ", 1)
            docs = _own_doc(self.sym)
            if docs: sig += "\n\n" + _ital_first(_doc_md(docs))
            md += "\n\n" + sig
            try: tbl = _md_text(DocmentTbl(self.sym)._repr_markdown_()).replace("NoneType", "None")
            except Exception: tbl = ""  # objects without an inspectable signature: the signature above says it
            if tbl.count("\n|") > 1: md += "\n\n" + tbl
            return md
    sd.BasicMarkdownRenderer = SiteRenderer
    return SiteRenderer

def page_map(nbs):
    "Quarto page name (nbdev's `output-file`, e.g. utils.html) -> our page (00_utils.html)."
    res = {}
    for p in nbs:
        stem = re.sub(r"^\d+[a-z]?_", "", p.stem) if p.stem != "index" else "index"
        res[stem + ".html"] = p.stem + ".html"
    return res

_TAGS = {"echo: false": "remove-input", "output: false": "remove-output", "include: false": "remove-cell",
         "eval: false": None, "output: asis": None}

ANCHORS = {}  # page (e.g. 00_utils.html, api/rfwp.utils.html) -> the symbol anchors it has; filled by `collect_anchors`

def _target(page, anchor, prefix):
    "Where a symbol link goes: its anchor on `page` if there, else its API entry, else the page itself."
    if not anchor or not ANCHORS or anchor in ANCHORS.get(page, ()): return prefix + page + ("#" + anchor if anchor else "")
    api = sorted(p for p, ids in ANCHORS.items() if p.startswith("api/") and anchor in ids)
    if api: return (prefix + api[0] if not prefix else api[0][4:]) + "#" + anchor  # prefix "../" means we are in api/
    return prefix + page

def _fix_links(text, pages, prefix=""):
    "nbdev symbol links to the Quarto site and links to notebooks -> relative links into this site."
    def site(m):
        return _target(pages.get(m.group(1), m.group(1)), (m.group(2) or "#")[1:], prefix)
    text = re.sub(re.escape(SITE_URL) + r"([\w.\-/]+\.html)(#[\w.\-]+)?", site, text)
    text = re.sub(r"\]\((?!https?:|#|/)([\w\-./]*?)([\w\-]+)\.ipynb(#[^)]*)?\)", lambda m: f"]({m.group(1)}{m.group(2)}.html{m.group(3) or ''})", text)
    # Quarto-style links between pages (`[layers](layers.html)`) -> our page names
    text = re.sub(r"\]\(([\w\-]+\.html)(#[^)]*)?\)", lambda m: f"]({pages.get(m.group(1), m.group(1))}{m.group(2) or ''})", text)
    return text

_CELL_KEYS = {"id", "cell_type", "metadata", "source", "outputs", "execution_count", "attachments"}

def to_myst(nb, pages, skipped, stored=()):
    "Translate a processed notebook for MyST-NB: title cell, cell options as tags, links, skipped-cell notes."
    import nbformat
    cells = []
    for c in nb.cells:
        c.metadata.pop("execution", None)  # execnb's timings: not part of the page (and not nbformat-valid)
        for k in [k for k in c if k not in _CELL_KEYS]: del c[k]  # nbdev's bookkeeping (`has_sd`)
        src = c.source if isinstance(c.source, str) else "".join(c.source)
        if c.cell_type == "raw" and src.startswith("---"):  # nbdev's frontmatter: title and description
            import yaml
            fm = yaml.safe_load(src.strip().strip("-")) or {}
            md = f"# {fm.get('title', nb.metadata.get('title', ''))}\n"
            if fm.get("description"): md += f"\n> {fm['description'].strip()}\n"
            cells.append(nbformat.v4.new_markdown_cell(_fix_links(md, pages), id=c.get("id") or "title"))
            continue
        if c.cell_type == "markdown":
            if src.strip() == "<!-- WARNING: THIS FILE WAS AUTOGENERATED! DO NOT EDIT! -->": continue
            c.source = _fix_links(src, pages)
        elif c.cell_type == "code":
            lines, tags = src.splitlines(), set(c.metadata.get("tags", []))
            for l in lines:
                opt = re.sub(r"\s+", " ", l[2:].strip()) if l.startswith("#|") else None
                if opt in _TAGS and _TAGS[opt]: tags.add(_TAGS[opt])
            c.source = "\n".join(l for l in lines if not l.startswith("#|")).strip("\n")
            if c.get("id") in skipped: tags.add("rfwp-not-run")
            if c.get("id") in stored: tags.add("rfwp-stored")
            if tags: c.metadata["tags"] = sorted(tags)
            for o in c.get("outputs", []):
                if "text/markdown" in o.get("data", {}):
                    md = o["data"]["text/markdown"]
                    o["data"]["text/markdown"] = _fix_links("".join(md) if isinstance(md, list) else md, pages)
            if not c.source and not c.get("outputs"): continue
        cells.append(c)
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    return nb

def keep_exports(cell):
    "Like nbdev's `rm_export`, but a course shows its code: drop `hide`/`default_exp` cells, tag exported ones."
    d = getattr(cell, "directives_", None) or {}
    if cell.cell_type != "code": return
    if d.keys() & {"hide", "default_exp"}: del cell["source"]
    elif d.keys() & {"export", "exporti", "exports"}: cell.metadata["tags"] = sorted(set(cell.metadata.get("tags", [])) | {"rfwp-exported"})

def site_filter():
    "nbdev's doc processors (those of nbdev-proc-nbs): `rm_export` -> `keep_exports`, no `exec_show_docs` (already run)."
    from nbdev.processors import FilterDefaults, rm_export, exec_show_docs
    class SiteFilter(FilterDefaults):
        def base_procs(self):
            return [keep_exports if p is rm_export else p for p in super().base_procs() if p is not exec_show_docs]
    return SiteFilter

def process_all(nbs, exec_dir, src_dir):
    "Process every executed notebook the way nbdev-proc-nbs does, then translate for MyST-NB."
    import nbformat
    from fastcore.nbio import read_nb, write_nb
    cwd = os.getcwd(); os.chdir(ROOT)  # nbdev's processors read the config from the working directory
    try:
        F, pages = site_filter(), page_map(nbs)
        for p in nbs:
            nb = read_nb(exec_dir/p.name)
            meta = dict(nb.metadata.get("rfwp_docs", {}))
            F()(nb)
            tmp = src_dir/(p.stem + ".nbdev.ipynb")
            write_nb(nb, tmp)
            nb = to_myst(nbformat.read(tmp, as_version=4), pages, set(meta.get("skipped_cells", [])), set(meta.get("stored_cells", [])))
            nb.metadata["rfwp_docs"] = meta
            nbformat.write(nb, src_dir/p.name); tmp.unlink()
    finally: os.chdir(cwd)

def collect_anchors(exec_dir, nbs):
    "The show_doc anchors of every notebook page (from the executed notebooks' outputs)."
    for p in nbs:
        nb = json.loads((exec_dir/p.name).read_text())
        md = "".join("".join(o.get("data", {}).get("text/markdown", "")) for c in nb["cells"] for o in c.get("outputs", []))
        ANCHORS[p.stem + ".html"] = set(re.findall(r'<span id="([^"]+)" class="rfwp-anchor"', md))

# ---------------------------------------------------------------- 3. API reference from rfwp._modidx
def _home_notebooks(nbs):
    "module name -> notebook stem that exports it (`#| default_exp`)."
    res = {}
    for p in nbs:
        m = re.search(r"#\|\s*default_exp\s+([\w.]+)", p.read_text())
        if m: res[re.sub(r"\.__init__$", "", "rfwp." + m.group(1))] = p.stem
    return res

def _value(obj, width=300):
    "A constant's repr for its API entry: no memory addresses (the page must not change between builds), cut to `width`."
    r = re.sub(r" at 0x[0-9a-f]+", "", repr(obj))
    return r if len(r) <= width else r[:width] + " …"

def api_pages(src_dir, nbs):
    "One MyST page per module: every name in its __all__ with show_doc and a parameter table; methods too."
    import importlib, inspect
    from rfwp._modidx import d as modidx
    R = install_renderer()
    homes, pages = _home_notebooks(nbs), page_map(nbs)
    out = src_dir/"api"; out.mkdir(parents=True, exist_ok=True)
    mods = sorted(set(modidx["syms"]) | set(homes))
    written = []
    for mod in mods:
        try: M = importlib.import_module(mod)
        except Exception as e: sys.exit(f"API reference: cannot import {mod}: {e}")
        names = list(getattr(M, "__all__", []))
        if not names: continue
        md = [f"# {mod}\n"]
        if M.__doc__: md.append(M.__doc__.strip().splitlines()[0] + "\n")
        if mod in homes: md.append(f"Explained in the notebook [{homes[mod]}](../{homes[mod]}.html).\n")
        methods = {}  # class name -> its public methods that nbdev indexed
        for k in modidx["syms"].get(mod, {}):
            parts = k[len(mod) + 1:].split(".")
            if len(parts) == 2 and (not parts[1].startswith("_") or parts[1] == "__call__"): methods.setdefault(parts[0], []).append(parts[1])
        for n in names:
            obj = getattr(M, n, None)
            if obj is None: continue
            home = getattr(obj, "__module__", mod) if inspect.isclass(obj) or inspect.isroutine(obj) else mod  # an instance (a Vocab) lives here
            if home != mod and home in mods:
                md.append(f"### {n}\n\nDefined in [{home}]({home}.html#{_anchor(n)}).\n"); continue
            if not (inspect.isclass(obj) or callable(obj)):
                md.append(f'### {n}\n\n<span id="{_anchor(n)}" class="rfwp-anchor"></span>\n\n```python\n{n}: {type(obj).__name__} = {_value(obj)}\n```\n'); continue
            md.append(_fix_links(R(obj, name=n, title_level=3)._repr_markdown_(), pages, prefix="../"))
            for meth in methods.get(n, []):
                f = getattr(obj, meth, None)
                if f is not None: md.append(_fix_links(R(f, name=f"{n}.{meth}", title_level=4)._repr_markdown_(), pages, prefix="../"))
        text = "\n\n".join(md) + "\n"
        (out/f"{mod}.md").write_text(text)
        ANCHORS[f"api/{mod}.html"] = set(re.findall(r'<span id="([^"]+)" class="rfwp-anchor"', text))
        written.append(mod)
    toc = "\n".join(written)
    summary = lambda m: ((importlib.import_module(m).__doc__ or "").strip().splitlines() or [""])[0]
    rows = "\n".join(f"| [{m}]({m}.html) | {summary(m)} |" for m in written)
    (out/"index.md").write_text(f"# API reference\n\nEvery exported function and class, module by module: signature, "
        f"docstring and one row per parameter (type, default, meaning). Each module is explained in its notebook.\n\n"
        f"| module | |\n|---|---|\n{rows}\n\n```{{toctree}}\n:hidden:\n{toc}\n```\n")
    return written

# ---------------------------------------------------------------- 4. Sphinx
CONF = '''# generated by tools/build_docs.py
project, author, copyright = "rfwp", "rfwp developers", "rfwp developers"
extensions = ["myst_nb", "sphinx_copybutton"]
copybutton_exclude = ".linenos, .gp, .go"   # copy the code, not prompts or line numbers
nb_execution_mode = "off"            # the notebooks' stored outputs (tools/run_notebook.py); nbdev-test runs them
nb_merge_streams = True
nb_render_markdown_format = "myst"   # show_doc outputs hold tables, which CommonMark lacks
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_all_links_external = True       # links are rewritten to relative .html paths by the build script
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]
html_theme = "furo"
html_title = "rfwp"
html_static_path = ["_static"]
html_css_files = ["rfwp.css"]
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
mathjax_path = "mathjax/tex-svg-full.js"   # served from the site: it works offline
html_favicon = "_static/favicon.svg"
html_theme_options = {"source_repository": "https://github.com/rfwp/rfwp/", "source_branch": "main", "source_directory": "nbs/"}
exclude_patterns = ["**.nbdev.ipynb"]
'''

FAVICON = '''<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#2b5797"/>
<g fill="#fff"><rect x="6" y="6" width="6" height="6"/><rect x="13" y="13" width="6" height="6"/><rect x="20" y="20" width="6" height="6"/>
<rect x="20" y="6" width="6" height="6" opacity=".5"/><rect x="6" y="20" width="6" height="6" opacity=".5"/></g></svg>
'''

CSS = '''/* generated by tools/build_docs.py */
.rfwp-source { float: right; font-size: smaller; margin-top: -2.2em; }
div.cell.tag_rfwp-not-run div.cell_input::before {
  content: "flagged slow/cuda: not run by the tests, and no output stored: run it yourself";
  display: block; font-size: 0.75em; color: var(--color-foreground-muted); padding: 0.2em 0.6em; }
div.cell.tag_rfwp-stored div.cell_input::before {
  content: "flagged slow/cuda: not run by the tests; its output is stored from a real run (see the text)";
  display: block; font-size: 0.75em; color: var(--color-foreground-muted); padding: 0.2em 0.6em; }
div.cell.tag_rfwp-exported div.cell_input::before {
  content: "exported to the rfwp package"; display: block; font-size: 0.75em;
  color: var(--color-foreground-muted); padding: 0.2em 0.6em; }
div.cell_output img { max-width: 100%; height: auto; }
div.cell_output table.docutils { margin-left: 0; }
/* wider text column where furo leaves room for it (its sidebar is calc(50% - 26em) or calc(50% - 18.5em), at
   least 15em; from 82em up the table of contents takes 15em more; .content's width excludes its 2 x 3em padding) */
@media (min-width: 72em) and (max-width: 82em) { .content { width: 54em; } }
@media (min-width: 82em) and (max-width: 90em) { .content { width: max(46em, calc(100vw - 37em)); } }
@media (min-width: 90em) { .content { width: 54em; } }
.rfwp-home-figure img { max-width: 100%; }
/* code wraps rather than hiding its right end: long lines continue on the next line, marked by the indent */
article div.highlight pre, article div.cell_output pre { white-space: pre-wrap; overflow-wrap: anywhere; }
/* wide tables scroll in their own box; a shadow on a side shows that more is there (scroll shadows) */
.table-wrapper { overflow-x: auto;
  background: linear-gradient(to right, var(--color-background-primary) 30%, transparent) left center / 2.5em 100% no-repeat local,
              linear-gradient(to left, var(--color-background-primary) 30%, transparent) right center / 2.5em 100% no-repeat local,
              radial-gradient(farthest-side at 0 50%, rgba(0,0,0,.25), transparent) left center / .9em 100% no-repeat scroll,
              radial-gradient(farthest-side at 100% 50%, rgba(0,0,0,.25), transparent) right center / .9em 100% no-repeat scroll; }
.table-wrapper table { background: transparent; }
'''

def _mathjax():
    "MathJax 3 (one self-contained file) from the sphinx-mathjax-offline package of the docs extra."
    from importlib.metadata import distribution
    f = Path(distribution("sphinx-mathjax-offline").locate_file("sphinx-mathjax-offline/static/mathjax/tex-svg-full.js"))
    if not f.exists(): sys.exit(f"MathJax not found at {f}: pip install -e '.[docs]'")
    return f

def _title(nb_path):
    "The first `# ` heading of a notebook (its page title), with `<`/`>` escaped for a toctree entry."
    for c in json.loads(Path(nb_path).read_text())["cells"]:
        if c["cell_type"] == "markdown" and (m := re.search(r"^# (.+)$", "".join(c["source"]), re.M)):
            return m[1].strip().replace("<", "&lt;").replace(">", "&gt;")
    return Path(nb_path).stem

def write_sphinx_src(src_dir, nbs):
    (src_dir/"_static"/"mathjax").mkdir(parents=True, exist_ok=True)
    shutil.copy2(_mathjax(), src_dir/"_static"/"mathjax"/"tex-svg-full.js")
    (src_dir/"_static"/"rfwp.css").write_text(CSS)
    (src_dir/"_static"/"favicon.svg").write_text(FAVICON)
    (src_dir/"conf.py").write_text(CONF)
    for d in NBS.iterdir():  # images and other files the notebooks refer to
        if d.is_dir() and not d.name.startswith((".", "_")): shutil.copytree(d, src_dir/d.name, dirs_exist_ok=True)
    # the navigation: index holds the (hidden) table of contents
    idx = src_dir/"index.ipynb"
    import nbformat
    nb = nbformat.read(idx, as_version=4)
    course = "\n".join(f"{p.stem.split('_')[0]} · {_title(p)} <{p.stem}>" for p in nbs if p.stem != "index")   # numbered as in the README
    nb.cells.append(nbformat.v4.new_markdown_cell(
        f"```{{toctree}}\n:hidden:\n:caption: The course\n{course}\n```\n\n```{{toctree}}\n:hidden:\n:caption: Reference\napi/index\n```",
        id="rfwp-toctree"))
    nbformat.write(nb, idx)

def sphinx(src_dir, out):
    "sphinx-build into build/docs/html (MyST-NB leaves its jupyter_execute/ beside that), then copy to `out`."
    html = BUILD/"html"
    for d in (html, BUILD/"jupyter_execute"): shutil.rmtree(d, ignore_errors=True)
    r = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", "1", "-E", "-a", str(src_dir), str(html)],
                       capture_output=True, text=True)
    sys.stderr.write(r.stderr)
    if r.returncode: sys.exit("sphinx-build failed")
    for d in (".doctrees", "_sources"): shutil.rmtree(html/d, ignore_errors=True)  # build cache; sources not copied
    _api_page_icons(html)
    (html/".buildinfo").unlink(missing_ok=True)
    (html/".nojekyll").write_text("")
    (html/"_manifest.json").write_text(json.dumps(manifest(), indent=1, sort_keys=True) + "\n")
    if out.exists(): shutil.rmtree(out)
    shutil.copytree(html, out)
    return r.stderr

def _api_page_icons(html):
    "furo's view/edit icons of an API page point at nbs/api/<module>.md, which is generated: point them at the module's file."
    repo = "https://github.com/rfwp/rfwp/"
    for page in (html/"api").glob("rfwp*.html"):
        mod = page.stem
        path = mod.replace(".", "/") + ".py"
        if not (ROOT/path).exists(): path = mod.replace(".", "/") + "/__init__.py"
        text = re.sub(rf'{re.escape(repo)}(blob|edit)/main/nbs/api/{re.escape(mod)}\.md(\?plain=true)?', rf'{repo}\1/main/{path}',
                      page.read_text())
        page.write_text(text)
    index = html/"api"/"index.html"   # the reference's own index: no source of its own
    index.write_text(re.sub(r'<div class="content-icon-container">.*?</div>\s*(?=<div class="theme-toggle-container)',
                            '<div class="content-icon-container">', index.read_text(), count=1, flags=re.S))

# ---------------------------------------------------------------- main
def build(out, workers=2, reuse=False):
    nbs = notebooks()
    t0 = time.time()
    print(f"== show_doc cells of {len(nbs)} notebooks ({workers} at a time) into {BUILD/'exec'}", flush=True)
    execute_all(nbs, BUILD/"exec", workers, reuse=reuse)
    t1 = time.time()
    src = BUILD/"src"
    if src.exists(): shutil.rmtree(src)
    src.mkdir(parents=True)
    print("== nbdev doc processing (show_doc, hide, links) and API pages", flush=True)
    collect_anchors(BUILD/"exec", nbs)
    api_pages(src, nbs)
    process_all(nbs, BUILD/"exec", src)
    write_sphinx_src(src, nbs)
    print(f"== sphinx -> {out}", flush=True)
    warns = sphinx(src, out)
    print(f"built {len(list(out.rglob('*.html')))} pages in {time.time()-t0:.0f} s (show_doc {t1-t0:.0f} s)"
          + (f", {warns.count('WARNING')} sphinx warnings" if "WARNING" in warns else ""))

def check(out):
    """Fail when the committed docs/ was not built from the current notebooks and script: the manifest, and, given
    a fresh build `out`, every file of the site byte for byte (a build is a function of the committed notebooks)."""
    committed = DOCS/"_manifest.json"
    if not committed.exists(): sys.exit("docs/_manifest.json is missing: run `python tools/build_docs.py` and commit docs/")
    old, new = json.loads(committed.read_text()), manifest()
    stale = [n for n in sorted(set(old["notebooks"]) | set(new["notebooks"])) if old["notebooks"].get(n) != new["notebooks"].get(n)]
    if old["script"] != new["script"]: stale.append("tools/build_docs.py")
    if out:
        files = lambda d: {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
        built, have = files(out), files(DOCS)
        differ = sorted(built ^ have) + sorted(f for f in built & have if (out/f).read_bytes() != (DOCS/f).read_bytes())
        if differ: stale.append(f"{len(differ)} files differ from a fresh build, e.g. {', '.join(differ[:5])}")
    if stale: sys.exit("docs/ is out of date (" + ", ".join(stale) + "): run `python tools/build_docs.py` and commit docs/")
    print("docs/ is up to date with the notebooks" + (" (byte for byte)" if out else ""))

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python tools/build_docs.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="where to write the site (default: docs/, or a temporary folder with --check)")
    ap.add_argument("--check", action="store_true", help="build (into --out) and fail when the committed docs/ is out of date")
    ap.add_argument("--check-only", action="store_true", help="only compare docs/_manifest.json with the notebooks; build nothing")
    ap.add_argument("--workers", type=int, default=2, help="notebooks whose show_doc cells run at once (default: 2)")
    ap.add_argument("--reuse", action="store_true", help="keep show_doc renderings of build/docs/exec whose notebooks did not change (faster, but "
                    "a changed docstring of another notebook's export may be stale: use for layout work only)")
    ap.add_argument("--exec-one", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.exec_one: return exec_one(*a.exec_one)
    if a.check_only: return check(None)
    out = a.out or (Path(tempfile.mkdtemp(prefix="rfwp-site-")) if a.check else DOCS)
    out = out.resolve()
    if a.check and out == DOCS.resolve(): ap.error("--check builds elsewhere: give --out a folder other than docs/")
    build(out, a.workers, a.reuse)
    if a.check: check(out)
    return 0

if __name__ == "__main__": sys.exit(main())
