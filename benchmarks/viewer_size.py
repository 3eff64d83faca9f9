"""The interactive viewer at GPT-2 small's shape (12 layers x 12 heads, 32,491 edges): file
size, write time and load time in headless Chromium, for a synthetic score matrix (the
viewer's cost depends on the graph and on what is drawn, not on where the scores came from).

    python -m benchmarks.viewer_size [--out DIR]

Three files: one circuit of 300 edges (greedy; the slider's sizes up to 300), one of 2,000
edges (drawn thinned to its 300 of largest |score|), and both overlaid (menu + difference
view). Load time: from navigation until plotly has laid the figure out (``_fullLayout``),
best of 3, Chromium started once; hover time: a real mouse move onto an edge until its
hover box shows. Needs chromium and playwright (.ci/chromium.sh).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from attrpatch.circuits.select import select
from attrpatch.circuits.file import Circuit, save_circuit
from attrpatch.graph import Graph
from attrpatch.plots.viewer import DIV_ID, write_view


def circuits() -> list[tuple[str, Circuit]]:
    g = Graph(12, 12, d_model=768)
    assert g.n_edges == 32491, g.n_edges
    out = []
    for name, n, seed in (("eap_ig", 300, 0), ("eap", 2000, 1)):
        torch.manual_seed(seed)
        s = torch.randn(g.n_up, g.n_down, dtype=torch.float64).abs() ** 3 * torch.randn(g.n_up, g.n_down).sign()
        s = s * g.edge_mask
        out.append((name, Circuit(g, select(s, g, n, "greedy"), s, method=name, model="gpt2-shape (synthetic)",
                                  task="synthetic", info={"selection": "greedy", "n_requested": n, "pruned": True})))
    return out


def load_times(html: Path, page, repeats: int = 3) -> tuple[float, float]:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        page.goto(html.resolve().as_uri())
        page.wait_for_function(f"document.getElementById('{DIV_ID}') && document.getElementById('{DIV_ID}')._fullLayout")
        best = min(best, time.perf_counter() - t)
    uid = page.evaluate(f"() => document.getElementById('{DIV_ID}').data.find(t => t.visible === true && t.uid.endsWith('-edges')).uid")
    traces = page.query_selector_all(".scatterlayer .trace")
    uids = page.evaluate("() => Array.from(document.querySelectorAll('.scatterlayer .trace')).map(e => e.__data__[0].trace.uid)")
    box = traces[uids.index(uid)].query_selector_all(".point")[0].bounding_box()
    t = time.perf_counter()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector(".hoverlayer .hovertext", timeout=10000)
    return best, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="directory for the files (default: a temporary one)")
    a = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    out = Path(a.out or tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    cs = circuits()
    paths = {n: save_circuit(out / f"{n}.json", c) for n, c in cs}
    views = {}
    for label, which in (("300 edges", ["eap_ig"]), ("2,000 edges (thinned)", ["eap"]), ("both overlaid", ["eap_ig", "eap"])):
        t = time.perf_counter()
        p = write_view([dict(cs)[w] for w in which], out / f"{'_'.join(which)}.html", [paths[w] for w in which])
        views[label] = (p, time.perf_counter() - t)
    print(f"circuit JSON: {paths['eap_ig'].stat().st_size / 1e6:.2f} MB (all 32,491 edges)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        print("| view | HTML size | write (s) | load in Chromium, best of 3 (s) | hover (s) |")
        print("| --- | --- | --- | --- | --- |")
        for label, (p, wt) in views.items():
            load, hover = load_times(p, page)
            print(f"| {label} | {p.stat().st_size / 1e6:.2f} MB | {wt:.1f} | {load:.2f} | {hover:.2f} |")
        browser.close()
    print(f"files in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
