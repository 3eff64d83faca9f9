"""The README's screenshot of the interactive viewer (docs/img/tiny_ioi_eap_ig_viewer.png):
open a viewer HTML file in headless Chromium, hover the edge of rank 1 (its score, exact
effect, reliability and flag show), save a PNG.

    python docs/viewer_screenshot.py VIEW.html OUT.png
"""
import shutil
import sys

from playwright.sync_api import sync_playwright

DIV = "circuit-viewer"


def main(src: str, out: str) -> None:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        pg = b.new_page(viewport={"width": 1150, "height": 900})
        pg.goto("file://" + str(__import__("pathlib").Path(src).resolve()))
        pg.wait_for_function(f"document.getElementById('{DIV}') && document.getElementById('{DIV}')._fullLayout")
        uids = pg.evaluate("() => Array.from(document.querySelectorAll('.scatterlayer .trace')).map(e => e.__data__[0].trace.uid)")
        k = next(i for i, u in enumerate(uids) if u.endswith("-edges"))
        j = pg.evaluate(f"() => document.getElementById('{DIV}').data.find(t => t.uid === '{uids[k]}')"
                        ".hovertext.findIndex(h => h.includes(', rank 1 of'))")
        box = pg.query_selector_all(".scatterlayer .trace")[k].query_selector_all(".point")[j].bounding_box()
        pg.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        pg.wait_for_selector(".hoverlayer .hovertext")
        pg.screenshot(path=out, full_page=True)
        b.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
