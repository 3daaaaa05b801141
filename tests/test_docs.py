"""The website in a real headless browser (Debian's chromium, driven over the DevTools protocol).

Checks the committed docs/ (or the build in $RFWP_DOCS_DIR, as CI does): every page loads without
console errors or failed requests, every internal link and anchor resolves, every image (the plots)
decodes, the math typesets, every notebook has a page and every exported function and class an API
entry with its signature, docstring and parameters. Screenshots of the home page and of one tutorial
page are written to $RFWP_ARTIFACTS (default build/test-artifacts/). Without chromium the browser
tests are skipped, except under CI, where they fail."""
import base64, contextlib, functools, html.parser, http.server, importlib, inspect, json, os, re, shutil
import subprocess, tempfile, threading, time, urllib.parse, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("RFWP_DOCS_DIR") or ROOT/"docs").resolve()
ARTIFACTS = Path(os.environ.get("RFWP_ARTIFACTS") or ROOT/"build"/"test-artifacts")
TUTORIAL = "02_delta_rule.html"  # the tutorial page that gets a screenshot

def notebook_stems(): return sorted(p.stem for p in (ROOT/"nbs").glob("*.ipynb") if not p.name.startswith(("_", ".")))

@functools.cache
def pages(): return sorted(p.relative_to(SITE).as_posix() for p in SITE.rglob("*.html"))

class _Parse(html.parser.HTMLParser):
    "Collects the ids, links and images of one page."
    def __init__(self):
        super().__init__(); self.ids, self.links, self.imgs = set(), [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("id", "name"):
            if a.get(k): self.ids.add(a[k])
        if tag == "a" and a.get("href"): self.links.append(a["href"])
        if tag == "link" and a.get("href") and a.get("rel") in ("stylesheet", "icon"): self.links.append(a["href"])
        if tag in ("img", "script") and a.get("src"): (self.imgs if tag == "img" else self.links).append(a["src"])

@functools.cache
def parsed(page):
    p = _Parse(); p.feed((SITE/page).read_text()); return p

def site_required():
    if not (SITE/"index.html").exists(): pytest.fail(f"no site at {SITE}: run `python tools/build_docs.py`")

# ------------------------------------------------------------------ static checks (no browser)
def test_every_notebook_has_a_page_and_is_in_the_navigation():
    site_required()
    home = parsed("index.html")
    nav = {urllib.parse.urlsplit(h).path for h in home.links}
    for stem in notebook_stems():
        assert f"{stem}.html" in pages(), f"no page for nbs/{stem}.ipynb"
        if stem != "index": assert f"{stem}.html" in nav, f"{stem} missing from the navigation of the home page"
    assert "api/index.html" in nav
    sidebar = re.findall(r'<a class="reference internal" href="(\d\w*)\.html">([^<]*)</a>', (SITE/"index.html").read_text())
    for stem, label in sidebar:   # the sidebar numbers the notebooks as the README does
        assert label.startswith(stem.split("_")[0] + " "), f"sidebar entry {label!r} of {stem} lacks its number"
    assert len(sidebar) >= len(notebook_stems()) - 1, f"only {len(sidebar)} numbered sidebar entries"
    # every course page links to the next one (the prev/next footer)
    course = [s for s in notebook_stems() if s != "index"]
    for a, b in zip(course, course[1:]):
        assert f"{b}.html" in parsed(f"{a}.html").links, f"{a}.html does not link to the next page {b}.html"

def test_internal_links_and_anchors_resolve():
    site_required()
    bad = []
    for page in pages():
        for href in parsed(page).links + parsed(page).imgs:
            u = urllib.parse.urlsplit(href)
            if u.scheme or href.startswith(("//", "mailto:")): continue
            target = (SITE/page).parent/urllib.parse.unquote(u.path) if u.path else SITE/page
            target = target.resolve()
            if not target.is_relative_to(SITE) or not target.exists(): bad.append(f"{page}: {href} (no file)"); continue
            if u.fragment and target.suffix == ".html":
                if u.fragment not in parsed(target.relative_to(SITE).as_posix()).ids: bad.append(f"{page}: {href} (no anchor)")
    assert not bad, f"{len(bad)} broken internal links:\n" + "\n".join(bad[:40])

def test_api_reference_documents_every_export():
    "Each exported function/class: anchor, signature block, docstring, and a row per documented parameter."
    site_required()
    from rfwp._modidx import d
    missing = []
    # nbdev's index leaves out a package's __init__ (rfwp.tasks, rfwp.ops): take those from the notebooks that export them
    inits = {"rfwp." + m for p in (ROOT/"nbs").glob("*.ipynb") for m in re.findall(r"#\|\s*default_exp\s+([\w.]+)\.__init__", p.read_text())}
    assert "rfwp.tasks" in inits
    for mod in sorted(set(d["syms"]) | inits):
        M = importlib.import_module(mod)
        page = f"api/{mod}.html"
        if page not in pages(): missing.append(f"{page} (no page)"); continue
        text = (SITE/page).read_text()
        for n in getattr(M, "__all__", []):
            obj = getattr(M, n)
            if getattr(obj, "__module__", mod) != mod or not callable(obj): continue
            marker = f'<span id="{n.lower()}" class="rfwp-anchor">'
            i = text.find(marker)
            if i < 0: missing.append(f"{mod}.{n} (no entry)"); continue
            entry = text[i:text.find('class="rfwp-anchor"', i + len(marker))]
            if "<pre>" not in entry: missing.append(f"{mod}.{n} (no signature)")
            doc = obj.__doc__ if not inspect.isclass(obj) or "__doc__" in vars(obj) else None  # not an inherited one
            if doc and inspect.isclass(obj) and doc.startswith(obj.__name__ + "("): doc = None  # dataclass's generated one
            if doc and _words(inspect.cleandoc(doc).splitlines()[0])[:60] not in _words(re.sub("<[^>]+>", "", entry)):
                missing.append(f"{mod}.{n} (no docstring)")
            try: params = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
            except (TypeError, ValueError): params = []
            from fastcore.docments import docments
            try: documented = [p for p, v in docments(obj, full=True).items() if p in params and v.get("docment")]
            except Exception: documented = []
            for p in documented:
                if not re.search(f"<td>(<p>)?{re.escape(p)}(</p>)?</td>", entry): missing.append(f"{mod}.{n}: parameter {p} not in its table")
    assert not missing, f"{len(missing)} gaps in the API reference:\n" + "\n".join(missing[:40])

def _words(s):
    "Letters and digits only: compares a docstring with its rendering (markdown, smart quotes, entities)."
    import html
    return re.sub(r"[^a-z0-9]", "", html.unescape(s).lower())

def test_readme_commands_and_links():
    readme = (ROOT/"README.md").read_text()
    assert "rfwp train listops" in readme
    assert "nbdev-test --n-workers 2 && python -m pytest -q tests" in readme
    for href in re.findall(r"\]\(([^)\s]+)\)", readme):
        u = urllib.parse.urlsplit(href)
        if u.scheme or href.startswith("#"): continue
        assert (ROOT/u.path).exists(), f"README.md links to {href}, which does not exist"

def _prose(page):
    "The visible text of a page outside code, math and scripts (what a reader sees as words)."
    import html
    s = (SITE/page).read_text()
    s = re.sub(r"<(script|style|pre|code|textarea)[^>]*>.*?</\1>", " ", s, flags=re.S)
    s = re.sub(r'<(span|div) class="math[^"]*">.*?</\1>', " ", s, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", s))

def test_no_raw_tex_in_prose():
    "A `$` or a TeX command left in the words of a page means MyST did not parse the maths (e.g. `$$` glued to a line)."
    site_required()
    bad = []
    for page in pages():
        if page.startswith("_") or page in ("search.html", "genindex.html"): continue
        for m in re.finditer(r"\$|\\[a-zA-Z]{2,}", text := _prose(page)):
            bad.append(f"{page}: ...{' '.join(text[max(0, m.start() - 50):m.start() + 30].split())}...")
    assert not bad, f"{len(bad)} raw TeX fragments in rendered prose:\n" + "\n".join(bad[:20])

def test_source_links_open_the_package():
    "Source links open the module's line, never an `<ipython-input-...>` pseudo-file; no icon points at the generated nbs/api/."
    site_required()
    bad = [f"{page}: {h}" for page in pages() for h in parsed(page).links
           if "ipython-input" in urllib.parse.unquote(h) or "/nbs/api/" in h]
    assert not bad, f"{len(bad)} links into <ipython-input> or the generated nbs/api/:\n" + "\n".join(bad[:10])
    src = [h for page in pages() for h in parsed(page).links if "/blob/main/rfwp/" in h]
    assert len(src) > 100, f"only {len(src)} source links into the package"
    for h in src:
        path = urllib.parse.urlsplit(h).path.split("/blob/main/", 1)[1]
        assert (ROOT/path).is_file(), f"source link to a missing file: {h}"

# ------------------------------------------------------------------ the browser
def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name): return shutil.which(name)
    msg = "chromium not installed (apt-get install -y chromium)"
    if os.environ.get("CI"): pytest.fail(msg)
    pytest.skip(msg)

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass

class Browser:
    "One headless chromium page driven over the DevTools protocol (websocket-client)."
    def __init__(self, exe, tmp):
        import websocket
        self.proc = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", "--disable-background-networking", "--hide-scrollbars", "--window-size=1280,900",
            f"--user-data-dir={tmp}", "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, t = Path(tmp)/"DevToolsActivePort", time.time()
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() - t > 30 or self.proc.poll() is not None: raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
        ws_url = json.loads(urllib.request.urlopen(req, timeout=10).read())["webSocketDebuggerUrl"]
        self.ws, self.n, self.events = websocket.create_connection(ws_url, timeout=60, suppress_origin=True), 0, []
        for m in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"): self.call(m)

    def call(self, method, **params):
        self.n += 1; self.ws.settimeout(60); self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg: raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method, timeout=30):
        t = time.time()
        while time.time() - t < timeout:
            for i, e in enumerate(self.events):
                if e.get("method") == method: return self.events.pop(i)
            self.ws.settimeout(max(0.1, timeout - (time.time() - t)))
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def eval(self, js, await_promise=False):
        r = self.call("Runtime.evaluate", expression=js, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in r: raise RuntimeError(f"{js[:60]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url):
        "Load `url`; wait for load and for MathJax; return the console errors and failed requests."
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")
        self.eval("window.MathJax && MathJax.startup && MathJax.startup.promise ? MathJax.startup.promise.then(() => 1) : 1", True)
        time.sleep(0.2)
        with contextlib.suppress(Exception):  # drain what arrived
            self.ws.settimeout(0.2)
            while True: self.events.append(json.loads(self.ws.recv()))
        errs = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown": errs.append("exception: " + json.dumps(p["exceptionDetails"])[:300])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errs.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error": errs.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed" and not p.get("canceled"): errs.append(f"request failed: {p.get('errorText')}")
            elif m == "Network.responseReceived" and p["response"]["status"] >= 400: errs.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        return errs

    def viewport(self, width=None):
        "Lay pages out `width` CSS pixels wide (a phone when < 500); None: back to the window's 1280."
        if width is None: self.call("Emulation.clearDeviceMetricsOverride"); return
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=width < 500)

    def screenshot(self, path, width=1280):
        self.viewport(width)
        h = self.eval("Math.min(document.documentElement.scrollHeight, 4000)")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=int(h), deviceScaleFactor=1, mobile=width < 500)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        self.viewport(None)
        path.parent.mkdir(parents=True, exist_ok=True); path.write_bytes(base64.b64decode(data))

    def close(self):
        with contextlib.suppress(Exception): self.ws.close()
        self.proc.terminate()
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill()

@pytest.fixture(scope="module")
def browser():
    site_required()
    exe = _chromium()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(SITE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        b = Browser(exe, tmp)
        b.base = f"http://127.0.0.1:{server.server_address[1]}/"
        try: yield b
        finally: b.close(); server.shutdown()

PAGE_JS = """(() => {
  const imgs = [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0,
                 plot: !!i.closest('.cell_output, .output'), w: i.naturalWidth}));
  return {imgs, title: document.title, math: document.querySelectorAll('mjx-container').length,
          mathErrors: document.querySelectorAll('mjx-merror, mjx-container [data-mml-node=merror], mjx-container [fill=red]').length,
          rawTex: (document.body.innerText.match(/\\\\\\(|\\\\\\[/g) || []).length,
          h1: (document.querySelector('h1') || {}).innerText || ''};
})()"""

def test_every_page_loads_cleanly_in_chromium(browser):
    problems, plots_per_page = [], {}
    for page in pages():
        errs = browser.open(browser.base + page)
        info = browser.eval(PAGE_JS)
        problems += [f"{page}: {e}" for e in errs]
        problems += [f"{page}: image did not render: {i['src']}" for i in info["imgs"] if not i["ok"]]
        if info["mathErrors"]: problems.append(f"{page}: {info['mathErrors']} TeX errors (undefined macros show in red)")
        if info["rawTex"]: problems.append(f"{page}: {info['rawTex']} untypeset math delimiters")
        if page not in ("search.html", "genindex.html") and not info["h1"]: problems.append(f"{page}: no title")
        plots_per_page[page] = sum(i["plot"] and i["ok"] for i in info["imgs"])
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
    with_plots = [p for p, n in plots_per_page.items() if n]
    assert len(with_plots) >= 3, f"expected rendered plots on several pages, found them on {with_plots}"

def test_math_typesets_and_screenshots(browser):
    assert not browser.open(browser.base + TUTORIAL)
    info = browser.eval(PAGE_JS)
    assert info["math"] > 5, f"{TUTORIAL}: only {info['math']} typeset formulas"
    assert any(i["plot"] and i["ok"] for i in info["imgs"]), f"{TUTORIAL} shows no plot"
    browser.screenshot(ARTIFACTS/"tutorial.png")
    assert not browser.open(browser.base + "index.html")
    home = browser.eval("""(() => ({text: document.querySelector('article').innerText,
        tables: [...document.querySelectorAll('article table')].map(t => t.innerText),
        pics: [...document.querySelectorAll('article img')].filter(i => i.naturalWidth > 100).length}))()""")
    assert "rfwp train listops" in home["text"], "the home page does not show the main job"
    assert "nbdev-test --n-workers 2 && python -m pytest -q tests" in home["text"], "the home page does not show the test command"
    assert any("measured" in t and "command" in t for t in home["tables"]), "the home page has no results table"
    assert home["pics"] >= 1, "the home page shows no picture"
    assert browser.eval("document.querySelectorAll('button.copybtn').length") >= 3, "no copy buttons on the home page's code"
    browser.screenshot(ARTIFACTS/"home.png")
    for f in ("home.png", "tutorial.png"): assert (ARTIFACTS/f).stat().st_size > 20_000, f"{f} looks empty"

def test_search_works_offline(browser):
    "The search page finds notebooks from the site's own index (no server, no network)."
    assert not browser.open(browser.base + "search.html?q=recurrent+delta")
    t, hits = time.time(), []
    while not hits and time.time() - t < 20:
        hits = browser.eval("[...document.querySelectorAll('#search-results li a')].map(a => a.getAttribute('href'))")
        time.sleep(0.3)
    assert any(h.startswith("04_recurrent_slow_nets.html") for h in hits), f"search for 'recurrent delta' found {hits[:5]}"

OVERFLOW_JS = """(() => {
  const cut = e => e.scrollWidth > e.clientWidth + 1;
  const pres = [...document.querySelectorAll('article pre')];
  const wide = [...document.querySelectorAll('article table')].filter(t => t.getBoundingClientRect().width > document.querySelector('article').clientWidth + 1);
  const cue = t => { const w = t.closest('.table-wrapper'); return !!w && getComputedStyle(w).overflowX === 'auto' && getComputedStyle(w).backgroundImage.includes('gradient'); };
  return {code: pres.length, cut: pres.filter(cut).length, wide: wide.length, uncued: wide.filter(t => !cue(t)).length,
          page: document.documentElement.scrollWidth > window.innerWidth + 1};
})()"""

@pytest.mark.parametrize("width", [1400, 390])
def test_code_is_readable_without_scrolling_sideways(browser, width):
    "No code block hides its right end at a laptop's 1400 px or a phone's 390 px; a wide table scrolls in its own box."
    problems, counts = [], {}
    browser.viewport(width)
    try:
        for page in pages():
            if page.startswith("api/") and width < 500: continue
            browser.open(browser.base + page)
            info = browser.eval(OVERFLOW_JS)
            counts[page] = info
            if info["cut"]: problems.append(f"{page}: {info['cut']} of {info['code']} code blocks overflow at {width} px")
            if info["uncued"]: problems.append(f"{page}: {info['uncued']} wide tables without a scrolling box and its shadow cue")
            if info["page"]: problems.append(f"{page}: the page itself scrolls sideways at {width} px")
    finally: browser.viewport(None)
    assert sum(c["code"] for c in counts.values()) > 100
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])

def test_screenshots_at_laptop_and_phone_width(browser):
    "The pages readers see first, at 1400 px and 390 px, as test artifacts."
    for page in ("index.html", "02_delta_rule.html", "04_recurrent_slow_nets.html"):
        for w in (1400, 390):
            browser.viewport(w)
            assert not browser.open(browser.base + page)
            out = ARTIFACTS/f"{page.removesuffix('.html')}-{w}.png"
            browser.screenshot(out, width=w)
            assert out.stat().st_size > 20_000, f"{out.name} looks empty"

def test_api_pages_read_well():
    "Autograd Functions show how to call them (`Fn.apply(...)`, not `*args, **kwargs`); types say None, not NoneType."
    site_required()
    rdn = (SITE/"api"/"rfwp.ops.rdn.html").read_text()
    assert "RecurrentDeltaRuleFn.apply(" in re.sub(r"<[^>]+>", "", rdn), "the autograd Function's signature is not its apply call"
    for page in pages():
        if page.startswith("api/"): assert "NoneType" not in _prose(page), f"{page} says NoneType"

def _result_rows():
    "The results table of README.md: (result text, command cell) per row."
    readme = (ROOT/"README.md").read_text()
    table = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [r.split(" | ") for r in table.splitlines() if r.startswith("| ") and not r.startswith(("| measured", "|---"))]
    return [(r[0], r[1]) for r in rows]

def _check_command(cmd):
    "Raise when `cmd` cannot be what produced a result: an unknown `rfwp` option, a python snippet that does not compile."
    import re, shlex
    from rfwp.cli import make_parser, command_parser
    from rfwp.tasks import load_builtin
    cmd = re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S+\s+)+", "", cmd)        # an environment prefix such as OMP_NUM_THREADS=1
    if cmd.startswith("rfwp "):
        argv = shlex.split(cmd)[1:]
        if (own := command_parser(argv)) is not None: own[0].parse_args(own[1])
        else: make_parser(load_builtin()).parse_args(argv)
        for path in re.findall(r"(?:--data|--text|--data-dir|--train)[ =](\S+)", cmd):
            assert not path.startswith("../shared"), f"`{cmd}` reads {path}, which only this repository's machine has"
    elif cmd.startswith("python -c "):
        code = shlex.split(cmd)[2]
        if missing := _unbound_names(code): raise AssertionError(f"`{cmd}` uses names it never defines or imports: {', '.join(missing)}")
        _check_imports(code)
    elif cmd.startswith("nbdev-test "):
        raise AssertionError(f"`{cmd}` prints no results (nbdev-test only says whether cells raise): cite the command that prints them")
    elif cmd.startswith("python tools/"):
        argv = shlex.split(cmd)[1:]
        assert (ROOT/argv[0]).is_file(), f"{argv[0]} does not exist"
        if argv[0] == "tools/run_notebook.py":
            a = _tool("run_notebook").make_parser().parse_args(argv[1:])
            for nb in a.notebooks: assert (ROOT/nb).is_file(), f"{nb} does not exist"
            assert a.notebooks or a.all, f"`{cmd}` names no notebook"
    elif not cmd.startswith(("compare_models(", "python ", "from ")):
        raise AssertionError(f"unknown kind of command: {cmd}")

def _unbound_names(code:str) -> list[str]:
    "The names a snippet reads that it never imports, assigns or defines, and that are not builtins (NameError at run time)."
    import ast, builtins
    tree = ast.parse(code)
    bound = set(dir(builtins))
    for n in ast.walk(tree):
        if isinstance(n, (ast.Import, ast.ImportFrom)): bound |= {(a.asname or a.name).split(".")[0] for a in n.names}
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store): bound.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.ClassDef)): bound.add(n.name)
        elif isinstance(n, ast.arg): bound.add(n.arg)
    return sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound)

def _check_imports(code:str):
    "Every `from X import a, b` of a snippet names what X has (the snippet's imports run, nothing else)."
    import ast, importlib
    for n in ast.walk(ast.parse(code)):
        if isinstance(n, ast.ImportFrom):
            m = importlib.import_module(n.module)
            for a in n.names: assert hasattr(m, a.name), f"{n.module} has no {a.name}"

def test_readme_snippet_checks_catch_what_fails():
    "The checks of the README's commands fail on the snippet that once failed for users (MODELS was defined only in a notebook)."
    assert _unbound_names('from rfwp.tasks.algorithmic import compare_models; compare_models("codeexec", models=MODELS)') == ["MODELS"]
    with pytest.raises(AssertionError, match="shared"): _check_command("rfwp bench lm-char --text ../shared/data/tinyshakespeare.txt")

def test_readme_result_commands_parse(monkeypatch):
    "Every command of every results row exists and its options parse (argparse exits on an unknown option)."
    rows = _result_rows()
    assert len(rows) >= 8
    problems = []
    for result, cell in rows:
        cmds = re.findall(r"`([^`]+)`", cell)
        if not cmds: problems.append(f"no command for: {result[:60]}"); continue
        for cmd in cmds:
            if not cmd.startswith(("rfwp ", "python ", "nbdev-test ", "compare_models(")): continue   # flags, paths named in the cell
            try: _check_command(cmd)
            except SystemExit as e: problems.append(f"`{cmd}` does not parse (exit {e.code})")
            except Exception as e: problems.append(f"`{cmd}`: {type(e).__name__}: {e}")
    assert not problems, "\n".join(problems)

def _tool(name):
    "The module of tools/<name>.py."
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, ROOT/"tools"/f"{name}.py")
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m

def test_run_notebook_tidies_outputs():
    "tools/run_notebook.py: a progress bar keeps its last state, this checkout's paths become relative, warnings are reported."
    rn = _tool("run_notebook")
    from fastcore.basics import AttrDict
    text = f"step 1/3\rstep 2/3\rstep 3/3\nsaved {ROOT}/nbs/runs/x.pt\nUserWarning: careful\n{tempfile.gettempdir()}/tmpab_12x9q/data ready\n"
    nb = AttrDict(cells=[AttrDict(cell_type="code", id="c1", outputs=[{"output_type": "stream", "name": "stderr", "text": text}])])
    warnings = rn.tidy(nb)
    out = nb.cells[0].outputs[0]["text"]
    assert out.splitlines()[:2] == ["step 3/3", "saved ./runs/x.pt"] and out.splitlines()[3] == "tmp/data ready", out
    assert str(ROOT) not in out and warnings == ["c1: UserWarning: careful"]
