"""Progress outside a terminal is compact lines (to the log and the terminal fd the Snakefile
passes), and outputs get the user's normal file mode with stale temps cleaned."""
import os
import stat

from attrpatch.io import atomic_path, clean_stale_temps, umask, write_json
from attrpatch.progress import LineStream, tqdm


class Log:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_frames_become_throttled_lines_on_log_and_terminal(tmp_path):
    log = Log()
    r, w = os.pipe()
    s = LineStream(log, terminal_fd=w, job="reference_ioi", every_s=3600)
    bar = tqdm(range(50), desc="exact patching", file=s, mininterval=0, ascii=True, ncols=80)
    for _ in bar:
        pass
    bar.close()
    s._term.close()
    os.close(w)
    term = os.read(r, 100000).decode()
    os.close(r)
    assert "\r" not in log.text
    lines = log.text.splitlines()
    assert len(lines) == 2, lines                       # first frame and the finished one, not 50
    assert lines[0].startswith("exact patching:   0%") and lines[1].startswith("exact patching: 100%")
    assert term.splitlines() == [f"[reference_ioi] {x}" for x in lines]


def test_lines_repeat_after_the_interval():
    log = Log()
    s = LineStream(log, every_s=0)
    for i in range(3):
        s.write(f"\rtrain tiny-gpt2: {i}/10")
    assert log.text.splitlines() == [f"train tiny-gpt2: {i}/10" for i in range(3)]


def test_outputs_have_the_users_mode_and_stale_temps_go(tmp_path):
    out = tmp_path / "r.json"
    stale = tmp_path / ".r.json.abc123.json"
    stale.write_text("")                                 # a killed writer's 0-byte temp
    other = tmp_path / ".rr.json.abc.json"
    other.write_text("")                                 # another output's temp: kept
    old = os.umask(0o022)
    try:
        write_json(out, {"a": 1})
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        os.umask(0o027)
        with atomic_path(tmp_path / "f.csv") as t:
            t.write_text("x\n")
        assert stat.S_IMODE((tmp_path / "f.csv").stat().st_mode) == 0o640 and umask() == 0o027
    finally:
        os.umask(old)
    assert not stale.exists() and other.exists()
    (tmp_path / ".m.tmpxyz").mkdir()                     # a killed training run's directory
    assert clean_stale_temps(tmp_path / "m") == [tmp_path / ".m.tmpxyz"] and not (tmp_path / ".m.tmpxyz").exists()


def test_trained_model_directory_is_readable_by_others(tmp_path):
    from attrpatch.models.train import train_tiny

    old = os.umask(0o022)
    try:
        train_tiny("tiny-attn", tmp_path / "m", steps=1, progress=False)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "m", *(tmp_path / "m").iterdir()]}
    assert modes["m"] == 0o755 and modes["model.safetensors"] == 0o644, modes
    assert all(m in (0o644, 0o755) for m in modes.values()), modes
