"""Screenshots of Flower for the README (docs/flower-workers.png, docs/flower-tasks.png).

Against a running stack (`docker compose up -d --build`, or `autodep serve` plus
`celery -A autodep_celery flower`):

    python scripts/flower_screenshot.py [--web http://127.0.0.1:8000]
                                        [--flower http://127.0.0.1:5555] [--out docs]

It sends a few requests of every configured example model through the web tier, so that Flower
has batches to show, then renders Flower's workers page and its tasks page with headless
Chromium (Debian's `chromium` package: `apt-get install chromium`). Needs only the standard
library and Pillow (for the request images); no torch.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

REQUESTS = {
    "resnet18": ({"ImageClassification": {"top_n": 3}}, (224, 224)),
    "tiny": ({"ImageClassification": {"top_n": 1}}, (32, 32)),
    "segmenter": ("ImageToImage", (64, 64)),
    "enhancer": ("ImageToImage", (64, 64)),
    "textgen": ("TextToText", None),
    "echo": ("TextToText", None),
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container or CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,760",
    "--virtual-time-budget=8000",  # let Flower's pages fetch their tables first
]


def body(model: str, seed: int) -> bytes:
    kind, size = REQUESTS[model]
    if size is None:
        data: dict[str, object] = {"Text": f"flower screenshot request {seed}"}
    else:
        img = Image.new("RGB", size, ((seed * 40) % 256, 120, 200))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = {
            "B64Image": {
                "image": base64.b64encode(buf.getvalue()).decode(),
                "height": None,
                "width": None,
            }
        }
    return json.dumps({"model": model, "inference_type": kind, "data": data}).encode()


def post(web: str, model: str, seed: int) -> int:
    req = urllib.request.Request(
        web + "/inference", data=body(model, seed), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def traffic(web: str, per_model: int = 16) -> None:
    jobs = [(m, i) for i in range(per_model) for m in REQUESTS]
    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda job: post(web, *job), jobs))
    print(f"sent {len(codes)} requests: {sorted(set(codes))}", file=sys.stderr)


def screenshot(chromium: str, url: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", url],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
    print(f"wrote {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--web", default="http://127.0.0.1:8000")
    p.add_argument("--flower", default="http://127.0.0.1:5555")
    p.add_argument("--out", default="docs", type=Path)
    p.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = p.parse_args(argv)
    traffic(args.web.rstrip("/"))
    flower = args.flower.rstrip("/")
    args.out.mkdir(parents=True, exist_ok=True)
    screenshot(args.chromium, flower + "/workers", args.out / "flower-workers.png")
    screenshot(args.chromium, flower + "/tasks", args.out / "flower-tasks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
