"""Checkpoints are written atomically: a failed write (full disk, kill) keeps the previous file."""
import subprocess
import sys
import textwrap

import torch

from tanet.models import create_model
from tanet.models.checkpoint import save_model
from tanet.models.factory import load_model

_SAVE_UNDER_LIMIT = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    from tanet.models import create_model
    from tanet.models.checkpoint import save_model
    model = create_model("tanet_tiny", num_classes=50)
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # the disk is "full" past limit
    try:
        save_model(sys.argv[1], model)
    except OSError as e:
        print("OSError", e.errno)
        sys.exit(3)
""")


def test_full_disk_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.safetensors"
    old = create_model("tanet_tiny", num_classes=50).eval()
    save_model(path, old)
    before = path.read_bytes()
    for limit in (0, 4096, len(before) // 2):
        r = subprocess.run([sys.executable, "-c", _SAVE_UNDER_LIMIT, str(path), str(limit)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "OSError 27" in r.stdout  # EFBIG: the write really failed part-way
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]  # no temp debris
    x = torch.randn(1, 8, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_model(path)(x), old(x))


def test_sigkill_during_repeated_saves_never_leaves_a_broken_file(tmp_path):
    """Kill a process that saves in a loop at several moments; the file is always loadable."""
    path = tmp_path / "ckpt.safetensors"
    save_model(path, create_model("tanet_tiny", num_classes=50))
    loop = textwrap.dedent(f"""
        import sys
        from tanet.models import create_model
        from tanet.models.checkpoint import save_model
        m = create_model("tanet_tiny", num_classes=50)
        print("ready", flush=True)
        while True:
            save_model({str(path)!r}, m)
    """)
    import signal
    import time

    for delay in (0.05, 0.13, 0.29, 0.41):
        p = subprocess.Popen([sys.executable, "-c", loop], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        load_model(path)  # must never raise
        for debris in tmp_path.glob(".*.tmp"):  # a killed writer may leave its temp file only
            debris.unlink()
