"""`tanet info` / `tanet models` through the real console entry point."""
import subprocess
import sys


def _tanet(*args):
    return subprocess.run([sys.executable, "-m", "tanet", *args], capture_output=True, text=True,
                          timeout=300)


def test_info_tiny_reports_tam_share_and_ratio():
    r = _tanet("info", "tanet_tiny", "--frames", "8", "--size", "64", "--num-classes", "10")
    assert r.returncode == 0, r.stderr
    assert "tanet_tiny" in r.stdout and "tsn_tiny" in r.stdout
    assert "ratio tanet_tiny / tsn_tiny" in r.stdout and "TAM share" in r.stdout


def test_unknown_model_is_a_clear_error():
    r = _tanet("info", "tanet_r5")
    assert r.returncode == 1 and "did you mean tanet_r50" in r.stderr
    assert "Traceback" not in r.stderr


def test_models_lists_registry():
    r = _tanet("models", "tanet_*")
    assert r.returncode == 0 and "tanet_r50" in r.stdout and "tsn_r50" not in r.stdout
