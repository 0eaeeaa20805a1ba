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


def test_every_command_and_argument_has_help():
    """`tanet CMD --help` and the generated CLI reference explain every argument: none is left
    with an empty help text (a new flag without one fails here)."""
    import argparse

    from tanet.cli import build_parser

    bare = []

    def walk(parser: argparse.ArgumentParser, where: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                bare.append(f"{where} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "tanet")
    assert not bare, f"arguments without help: {bare}"
