"""The pictures of `tanet serve`'s page (docs/serve.png, docs/serve_avi.png: the README and
docs/how-to/serve.md).

Writes an 8 s video of four synthetic-benchmark motions in a row (move_right, move_left, grow,
shrink), as H.264 in MP4 or, with --avi, as MPEG-4 Part 2 in AVI (UCF101's format, which the
browser cannot play: the page shows the sampled frames instead), starts `tanet serve` with
CHECKPOINT on a free loopback port, opens the page in headless Chromium (Debian's chromium +
chromium-driver), uploads the video, waits for the top-k, the strip of sampled frames and the
timeline, moves the cursor to 3 s and saves a screenshot.
Usage: python scripts/serve_screenshot.py CHECKPOINT [--avi] [--out PNG] [--width 900]
(the pictures': the checkpoint of `make demo`, runs/demo/tanet/best.safetensors)
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tanet.testing.browser import headless_chrome
from tanet.testing.serve import Server

ROOT = Path(__file__).resolve().parents[1]


def motions_video(path: Path) -> Path:
    """move_right, move_left (the same clip reversed), grow, shrink: 4 x 16 frames at 8 fps,
    upscaled 3x to 192 px so that the page shows them large; MPEG-4 Part 2 for an .avi."""
    from tanet.data.encode import write_video
    from tanet.data.synthetic import render_sequence

    rng = np.random.default_rng(3)
    right = render_sequence(0, rng)  # (16, 64, 64, 3)
    grow = render_sequence(1, rng)
    clip = np.concatenate([right, right[::-1], grow, grow[::-1]])  # (64, 64, 64, 3)
    clip = clip.repeat(3, axis=1).repeat(3, axis=2)  # (64, 192, 192, 3)
    if path.suffix == ".avi":
        return write_video(path, np.ascontiguousarray(clip), fps=8, codec="mpeg4")
    return write_video(path, np.ascontiguousarray(clip), fps=8, crf=18)


def _wait_for_the_page(driver, wait, avi: bool) -> None:
    """The strip's pictures and the timeline drawn, the cursor at 3 s, its frame shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart svg"))
    if avi:  # no player to move: the keyboard on the chart (1 s steps)
        chart = driver.find_element(By.CSS_SELECTOR, "#chart svg")
        chart.send_keys(Keys.HOME, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
        driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
    else:
        driver.execute_script("const v = document.getElementById('video');"
                              "v.currentTime = 3; window.scrollTo(0, 0);")
    wait.until(lambda d: d.find_element(By.ID, "now").text.startswith("3.0 s"))
    shown = ("const i = document.getElementById('frame-img'); return i.complete && "
             "i.naturalWidth > 0;" if avi else  # the frame at 3 s is shown, no spinner
             "const v = document.getElementById('video'); return !v.seeking && v.readyState >= 2;")
    wait.until(lambda d: d.execute_script(shown))
    wait.until(lambda d: d.execute_script(
        "const imgs = [...document.querySelectorAll('#strip img')];"
        "return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--avi", action="store_true",
                    help="upload an AVI (MPEG-4 Part 2) the browser cannot play")
    ap.add_argument("--out", default=None,
                    help="default: docs/serve.png, with --avi docs/serve_avi.png")
    ap.add_argument("--width", type=int, default=900, help="width of the saved PNG")
    args = ap.parse_args()

    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    out = Path(args.out or ROOT / "docs" / ("serve_avi.png" if args.avi else "serve.png"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = motions_video(tmp / ("motions.avi" if args.avi else "motions.mp4"))
        server = Server(Path(args.checkpoint), tmp / "up", tmp / "server.log", "--quiet")
        shot = tmp / "shot.png"
        try:  # a window tall enough for the chart
            with headless_chrome(1000, 1560 if args.avi else 1420, "--hide-scrollbars") as driver:
                wait = WebDriverWait(driver, 120)
                driver.get(f"http://127.0.0.1:{server.port}/")
                driver.execute_script("document.getElementById('window').value = '2';")
                driver.find_element(By.ID, "file").send_keys(str(video))
                _wait_for_the_page(driver, wait, args.avi)
                time.sleep(0.5)
                driver.save_screenshot(str(shot))
        finally:
            server.stop()
        img = Image.open(shot).convert("RGB")
        img = img.resize((args.width, round(img.height * args.width / img.width)), Image.LANCZOS)
        out.parent.mkdir(parents=True, exist_ok=True)
        img.quantize(colors=128).save(out, optimize=True)
    print(f"{out}: {out.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
