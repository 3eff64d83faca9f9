"""The benchmark code runs end to end on tiny shapes and its table has every row (no timing asserted)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXPECTED = {
    "gradient": {"eap_overhead", "eap_ig_cost", "eap_gp_cost", "atp_graddrop_cost", "atp_star_cost"},
    "patching": {"patching_speedup", "patching_speedup_best",
                 "patching_rate_loop", "patching_rate_batched_default"},
    "prefix": {"patching_gpt2_speedup", "patching_gpt2_limit", "patching_gpt2_window_gain",
               "patching_gpt2_speedup_prefix_and_window", "patching_gpt2_speedup_batching_alone",
               "patching_gpt2_speedup_prefix_and_batching", "patching_gpt2_rate_loop", "patching_gpt2_rate_both",
               "acdc_gpt2_rate", "acdc_gpt2_first_tests"},
    "memory": {"memory_eap"},
    "peer": {"peer_auto_circuit"},
}


def test_quick_benchmarks_have_every_row(tmp_path):
    from benchmarks.run import main

    rows = main(["--quick", "--parts", "gradient,patching,prefix,peer", "--out", str(tmp_path), "--peer-python", ""])
    ids = {r["id"] for r in rows}
    for part in ("gradient", "patching", "prefix", "peer"):
        assert EXPECTED[part] <= ids, EXPECTED[part] - ids
    md = next(tmp_path.glob("*.md")).read_text()
    csv_text = next(tmp_path.glob("*.csv")).read_text()
    for rid in EXPECTED["gradient"] | EXPECTED["patching"] | EXPECTED["prefix"]:
        assert f"| {rid} |" in md and rid in csv_text
    for r in rows:
        if r["id"] != "peer_auto_circuit":
            assert r["value"] == r["value"] and r["value"] > 0, r  # finite, positive


def test_memory_rows_shape():
    # The memory child (a fresh interpreter per point) costs seconds each: checked on the
    # table builder only, with measurements stubbed.
    from benchmarks import common, memory

    calls = []

    def fake_measure(ckpt, method, B, P, threads=2):
        calls.append((method, B, P))
        return dict(method=method, B=B, P=P, base_mb=100.0, peak_mb=100.0 + B * P, delta_mb=float(B * P))

    orig, orig_save = memory.measure, memory.save_checkpoint
    memory.measure, memory.save_checkpoint = fake_measure, lambda shape, out: out
    try:
        rows, raw = memory.run(common.QUICK, methods=memory.METHODS)
    finally:
        memory.measure, memory.save_checkpoint = orig, orig_save
    assert {r["id"] for r in rows} == {f"memory_{m}" for m in memory.METHODS}
    assert all(r["value"] == common.QUICK.batch * common.QUICK.seq for r in rows)
    assert "MB/example" in rows[0]["context"] and "MB/position" in rows[0]["context"]
