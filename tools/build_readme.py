"""Write README.md from nbs/index.ipynb without Quarto (nbdev-readme needs it).

Markdown cells are copied; code cells become ```python blocks, followed by their text output when the
notebook holds one. Cells marked `#| hide` are dropped and `#|` directive lines removed, as nbdev does.
Relative links and images are written for nbs/ (where index.ipynb and the website's pages live) and are
rebased onto the repository root here, so `00_utils.ipynb` becomes `nbs/00_utils.ipynb`.
Run `python tools/build_readme.py --check` to fail when README.md is out of date (CI does)."""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def rebase(md, prefix="nbs/"):
    "Prefix relative link and image targets of markdown `md` (not URLs, anchors or absolute paths) with `prefix`."
    return re.sub(r"(\]\()(?![a-z][a-z0-9+.-]*:|#|/)([^)\s]+)", lambda m: m.group(1) + prefix + m.group(2), md)

def render(nb_path):
    nb = json.loads(Path(nb_path).read_text())
    parts = []
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        lines = src.splitlines()
        directives = [l for l in lines if l.startswith("#|")]
        if any(d.replace(" ", "") in ("#|hide", "#|export", "#|exporti") for d in directives): continue
        body = "\n".join(l for l in lines if not l.startswith("#|")).strip()
        if not body: continue
        if cell["cell_type"] == "markdown": parts.append(rebase(body))
        elif cell["cell_type"] == "code":
            parts.append(f"```python\n{body}\n```")
            for out in cell.get("outputs", []):
                text = out.get("text") or out.get("data", {}).get("text/plain")
                if text: parts.append("```\n" + "".join(text).rstrip() + "\n```")
    head = "<!-- generated from nbs/index.ipynb by tools/build_readme.py: edit the notebook, not this file -->\n\n"
    return head + "\n\n".join(parts) + "\n"

if __name__ == "__main__":
    text, out = render(root/"nbs"/"index.ipynb"), root/"README.md"
    if "--check" in sys.argv:
        if not out.exists() or out.read_text() != text:
            sys.exit("README.md is out of date: run `python tools/build_readme.py`")
    else: out.write_text(text)
