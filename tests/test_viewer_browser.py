"""The viewer in a real browser: Debian's headless Chromium (.ci/chromium.sh) driven by
playwright (no browser download: the system executable). Opens a file written by `attrpatch
view` from disk and checks: no console errors; the nodes and edges drawn (SVG points) are the
circuit's; a real mouse hover shows the edge's values from the JSON file; the menu and the
slider switch what is drawn. Skips, saying why, without Chromium or playwright, except under
CI=true where that is a failure."""
import html
import json
import os
import shutil
import time

import pytest
import torch

from attrpatch.circuits.select import select
from attrpatch.circuits.file import Circuit, save_circuit
from attrpatch.cli import main
from attrpatch.graph import Graph
from attrpatch.plots.viewer import DIV_ID

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser_or_skip():
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why, sync_playwright = "playwright is not installed (pip install -e '.[test]')", None
    if why is None and CHROMIUM is None:
        why = "no chromium on PATH (Debian: run .ci/chromium.sh as root)"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, but the browser test cannot run: {why}")
        pytest.skip(why)
    return sync_playwright


# every SVG trace group with its trace's uid and number of points drawn
DRAWN = """() => Array.from(document.querySelectorAll('.scatterlayer .trace'))
    .map(e => [e.__data__[0].trace.uid || '', e.querySelectorAll('.point').length])"""
TITLE = "() => document.querySelector('.gtitle').textContent"


def _drawn(page) -> dict:
    """{panel uid: {'edges': points, 'nodes': points}} of the traces now drawn."""
    out = {}
    for uid, n in page.evaluate(DRAWN):
        for kind in ("edges", "nodes"):
            if uid.endswith(f"-{kind}"):
                out.setdefault(uid[: -len(kind) - 1], {})[kind] = n
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("view")
    g = Graph(2, 3, d_model=16)
    torch.manual_seed(0)
    s = torch.randn(g.n_up, g.n_down, dtype=torch.float64) * g.edge_mask
    a = Circuit(g, select(s, g, 12, "greedy"), s, method="eap_ig", task="toy",
                info={"selection": "greedy", "n_requested": 12, "pruned": True, "faithfulness": {"faithfulness": 0.61},
                      "faithfulness_by_size": [{"n_requested": 20, "n_edges": 20, "faithfulness": 0.83}]})
    top = a.edges[0]
    a.edge_info = {top: {"exact": 0.3125, "reliability": 0.875, "flag": True}}
    s2 = s + 0.5 * torch.randn(g.n_up, g.n_down, dtype=torch.float64) * g.edge_mask
    b = Circuit(g, select(s2, g, 9, "greedy"), s2, method="eap", info={"selection": "greedy", "n_requested": 9})
    assert b.n_edges > 0 and not torch.equal(a.mask, b.mask)
    pa, pb = save_circuit(d / "a.json", a), save_circuit(d / "b.json", b)
    out = d / "view.html"
    assert main(["view", str(pa), str(pb), "--out", str(out)]) == 0
    return {"html": out, "a": pa, "b": pb, "top": top, "n": {"a": (a.n_edges, len(a.nodes)), "b": (b.n_edges, len(b.nodes))}}


def test_viewer_in_headless_chromium(files):
    sync_playwright = _browser_or_skip()
    d = json.loads(files["a"].read_text())
    top = files["top"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(files["html"].resolve().as_uri())
            page.wait_for_function(f"document.getElementById('{DIV_ID}') && document.getElementById('{DIV_ID}')._fullLayout")
            # drawn: the first file's saved circuit, its edges and nodes
            drawn = _drawn(page)
            assert list(drawn) == ["c0s2"], drawn
            assert (drawn["c0s2"]["edges"], drawn["c0s2"]["nodes"]) == files["n"]["a"]
            assert "eap_ig: saved circuit, 12 edges" in page.evaluate(TITLE) and "faithfulness 0.610" in page.evaluate(TITLE)
            # a real mouse hover on the top edge shows its values from the JSON file
            j = page.evaluate(f"""() => {{ const gd = document.getElementById('{DIV_ID}');
                const t = gd.data.find(t => t.uid === 'c0s2-edges');
                return t.hovertext.findIndex(h => h.startsWith('<b>{html.escape(top)}</b>')); }}""")
            assert j >= 0
            pt = page.query_selector_all(".scatterlayer .trace")[
                [u for u, _ in page.evaluate(DRAWN)].index("c0s2-edges")].query_selector_all(".point")[j]
            box = pt.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_selector(".hoverlayer .hovertext", timeout=5000)
            text = page.evaluate("() => document.querySelector('.hoverlayer .hovertext').textContent")
            e = d["edges"][top]
            assert top in text and f"score (eap_ig): {e['score']:.4g}" in text, text
            assert f"exact effect: {e['exact']:.4g}" in text and f"reliability rho: {e['reliability']:.4g}, FLAGGED" in text
            assert f"rank {e['rank']} of" in text
            # the slider: the circuit of 20 edges, with its recorded faithfulness
            labels = page.query_selector_all(".slider-label-group")
            [lab for lab in labels if lab.text_content() == "20"][0].click(force=True)
            time.sleep(0.5)
            assert "greedy selection of 20: 20 edges" in page.evaluate(TITLE) and "faithfulness 0.830" in page.evaluate(TITLE)
            assert [v["edges"] for v in _drawn(page).values()] == [20]
            # the menu: the other file's circuit
            page.click(".updatemenu-header-group")
            page.wait_for_selector(".updatemenu-dropdown-button")
            [b for b in page.query_selector_all(".updatemenu-dropdown-button") if b.text_content() == "eap"][0].click()
            time.sleep(0.5)
            drawn = _drawn(page)
            assert len(drawn) == 1 and tuple(list(drawn.values())[0][k] for k in ("edges", "nodes")) == files["n"]["b"]
            assert page.evaluate(TITLE).startswith("eap: saved circuit")
            assert errors == []
        finally:
            browser.close()


def test_missing_browser_skips_outside_ci_and_fails_under_ci(monkeypatch):
    """Negative control of the skip rule: without a browser, skip outside CI, fail under CI=true."""
    monkeypatch.setattr(__import__(__name__), "CHROMIUM", None)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no chromium on PATH"):
        _browser_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true, but the browser test cannot run"):
        _browser_or_skip()
