"""Where our EAP's time goes at B 8 x P 16 on the GPT-2-small shape, against the passes it needs.

    python benchmarks/profile_eap.py     # prints the table; writes benchmarks/results/<date>-profile-eap.md

EAP needs two forwards (source: its outputs; base: the gradient run) and one backward. The
floor is those passes without any hook: a plain forward, and a forward + backward from the
embedding (weights frozen). Timed in one process, interleaved, medians:

* floor: plain forward + plain forward/backward;
* capture: our source forward with the output-capture hooks;
* gradient run without scores: our base forward + backward with every hook, callback a no-op;
* EAP: the whole `eap_scores` (the einsum into the score matrix is the difference to the above).

Then `torch.profiler` over one `eap_scores` call: self CPU time by operator, grouped into
matmuls (forward and backward), copies (clone/cat/copy/contiguous), element-wise, and the rest.
"""
from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "src")]
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from attrpatch.activations import capture_outputs, input_gradients  # noqa: E402
from attrpatch.graph import Graph  # noqa: E402
from attrpatch.io import atomic_path  # noqa: E402
from attrpatch.methods.eap import eap_scores  # noqa: E402
from attrpatch.metrics import task_metric  # noqa: E402
from benchmarks.common import FULL, build_model, interleaved_times, load_average, median, random_batch  # noqa: E402

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::baddbmm", "aten::linear",
               "aten::einsum"),
    "copies": ("aten::clone", "aten::cat", "aten::copy_", "aten::contiguous", "aten::to", "aten::_to_copy",
               "aten::repeat", "aten::index", "aten::index_select"),
}


def run(B: int = 8, P: int = 16, repeats: int = 5, threads: int = 2) -> str:
    torch.set_num_threads(threads)
    load0 = load_average()
    model = build_model(FULL)
    g, b = Graph.from_model(model), random_batch(B, P, FULL.vocab_size)
    metric = task_metric(b)

    def plain_fwd():
        with torch.no_grad():
            model(b.corrupt)

    def plain_fwd_bwd():
        emb = {}

        def leaf(t, hook):
            emb["x"] = t.detach().requires_grad_(True)
            return emb["x"]
        with torch.enable_grad():
            logits = model.run_with_hooks(b.clean, fwd_hooks=[("blocks.0.hook_in", leaf)])
            torch.autograd.grad(metric(logits).mean(), [emb["x"]])

    fns = {"plain forward": plain_fwd, "plain forward+backward": plain_fwd_bwd,
           "capture forward": lambda: capture_outputs(model, g, b.corrupt, node_major=True),
           "gradient run, no scores": lambda: input_gradients(model, g, b.clean, metric, need_outputs=False,
                                                              on_input_grad=lambda ih, gr, o: None),
           "eap_scores": lambda: eap_scores(model, g, b)}
    times = interleaved_times(fns, repeats=repeats, warmup=1)
    T = {k: median(v) for k, v in times.items()}
    floor = T["plain forward"] + T["plain forward+backward"]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        eap_scores(model, g, b)
    ops = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in ops)
    grouped = {k: 0.0 for k in (*GROUPS, "backward nodes", "other")}
    for key, t in ops:
        k = next((k for k, names in GROUPS.items() if key in names), None)
        k = k or ("backward nodes" if key.endswith("Backward0") or "Backward" in key else "other")
        grouped[k] += t
    top = sorted(ops, key=lambda x: -x[1])[:12]
    load1 = load_average()
    lines = [f"# Our EAP profiled, {dt.datetime.now():%Y-%m-%d %H:%M}", "",
             f"GPT-2-small shape (random weights), B={B} x P={P}, {threads} threads, {g.n_edges} edges; "
             f"load average {load0:.2f} at start, {load1:.2f} at end (the machine is shared: ratios only, medians of "
             f"{repeats} interleaved repeats).", "",
             "| pass | median s | / floor |", "| --- | --- | --- |"]
    for k, v in T.items():
        lines.append(f"| {k} | {v:.3f} | {v / floor:.2f} |")
    lines += ["", f"Floor (plain forward + plain forward/backward) {floor:.3f} s; EAP / floor "
              f"{T['eap_scores'] / floor:.2f}; hook overhead of the gradient run "
              f"{T['gradient run, no scores'] / T['plain forward+backward']:.2f}x its plain pass, of the capture "
              f"forward {T['capture forward'] / T['plain forward']:.2f}x; scores (einsum) "
              f"{T['eap_scores'] - T['capture forward'] - T['gradient run, no scores']:.3f} s.", "",
             "Profiler, one eap_scores call, self CPU time by group:", "", "| group | share |", "| --- | --- |"]
    lines += [f"| {k} | {v / total:.1%} |" for k, v in grouped.items()]
    lines += ["", "Top operators (self CPU):", "", "| operator | share |", "| --- | --- |"]
    lines += [f"| {k} | {t / total:.1%} |" for k, t in top]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    md = run()
    print(md)
    out = HERE / "results" / f"{dt.datetime.now():%Y-%m-%d}-profile-eap.md"
    with atomic_path(out) as tmp:
        tmp.write_text(md)
