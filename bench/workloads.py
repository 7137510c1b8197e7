"""What is measured: a model file, a JPEG and the Autodep /inference body that sends it.

Used by bench.cli (request bodies for wrk), bench.inprocess (the same JPEG bytes) and
bench.baseline_fastapi (nothing here: it reads the body). Images are synthetic and seeded, so
every run sends the same bytes. Imports PIL only; torch is imported lazily by build_models.
"""

from __future__ import annotations

import base64
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFilter

TOP_N = 5
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Workload:
    name: str
    """Also the model's file stem (resnet18.pt) and so its served name."""
    size: int
    """Side of the square JPEG sent, in pixels."""
    what: str


WORKLOADS = {
    "resnet18": Workload("resnet18", 224, "ResNet-18, one 224x224 JPEG, top-5"),
    "tiny": Workload("tiny", 32, "tiny MLP, one 32x32 JPEG, top-5 (pure overhead)"),
}


def jpeg(size: int, seed: int = 0) -> bytes:
    """A photo-like JPEG: smooth colour blobs plus grain (noise alone compresses unlike photos)."""
    rng = random.Random(seed)
    coarse = Image.new("RGB", (8, 8))
    coarse.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(64)])
    img = coarse.resize((size, size), Image.Resampling.BICUBIC)
    grain = Image.frombytes("L", (size, size), rng.randbytes(size * size)).convert("RGB")
    img = Image.blend(img, grain, 0.12).filter(ImageFilter.SHARPEN)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def request_body(model: str, image: bytes, top_n: int = TOP_N) -> bytes:
    """Autodep's POST /inference body for one image classification."""
    body = {
        "model": model,
        "inference_type": {"ImageClassification": {"top_n": top_n}},
        "data": {
            "B64Image": {"image": base64.b64encode(image).decode(), "height": None, "width": None}
        },
    }
    return json.dumps(body).encode()


def build_models(directory: Path, names: list[str]) -> dict[str, Path]:
    """The example models' files in `directory`: taken when present, else built (seeded)."""
    paths = {name: directory / f"{name}.pt" for name in names}
    if not all(p.is_file() for p in paths.values()):
        from autodep_celery.worker.examples import write_example_models  # torch: only when building

        write_example_models(directory)
    return paths
