"""POST /inference end to end: every request form, results equal to the model in process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import pytest
import torch

from tests.integration.conftest import Stack, Web
from tests.integration.support import (
    b64,
    decode_png,
    image_bytes,
    reference_output,
    reference_probabilities,
    to_tensor,
)

IMAGENET = (
    resources.files("autodep_celery").joinpath("data/imagenet_classes.txt").read_text().split("\n")
)


def classify(
    web: Web,
    data: bytes,
    model: str = "resnet18",
    top_n: int | None = 5,
    height: object = None,
    width: object = None,
    omit_size: bool = False,
) -> object:
    image: dict[str, object] = {"image": b64(data)}
    if not omit_size:
        image.update(height=height, width=width)
    kind: object = {"ImageClassification": {"top_n": top_n} if top_n is not None else {}}
    body = {"data": {"B64Image": image}, "inference_type": kind, "model": model}
    resp = web.post("/inference", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def assert_classification(
    body: object, model_path: str, data: bytes, top_n: int, labels: list[str]
) -> None:
    assert isinstance(body, list) and len(body) == 2
    inference, took = body
    assert set(took) == {"secs", "nanos"} and took["secs"] >= 0 and 0 <= took["nanos"] < 10**9
    assert took["secs"] * 10**9 + took["nanos"] > 0
    got = inference["Classification"]
    assert len(got) == top_n
    probs = reference_probabilities(model_path, data)
    top = torch.topk(probs, top_n)
    for entry, p, i in zip(got, top.values.tolist(), top.indices.tolist(), strict=True):
        assert entry["probability"] == pytest.approx(p, abs=1e-4)
        assert entry["label"] == labels[i]
    assert [e["probability"] for e in got] == sorted((e["probability"] for e in got), reverse=True)


def test_classification_matches_in_process(stack: Stack, web: Web) -> None:
    data = image_bytes(224, 224, seed=1)
    body = classify(web, data)
    assert_classification(body, str(stack.model_dir / "resnet18.pt"), data, 5, IMAGENET)


@pytest.mark.parametrize("size", [{"height": 224, "width": 224}, {"omit_size": True}, {}])
def test_b64image_size_fields_null_absent_or_set(stack: Stack, web: Web, size: dict) -> None:
    data = image_bytes(224, 224, seed=2)
    body = classify(web, data, top_n=3, **size)
    assert_classification(body, str(stack.model_dir / "resnet18.pt"), data, 3, IMAGENET)


def test_top_n_defaults_to_five(web: Web) -> None:
    body = classify(web, image_bytes(64, 64, seed=3), top_n=None)
    assert len(body[0]["Classification"]) == 5


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_png_and_jpeg(stack: Stack, web: Web, fmt: str) -> None:
    data = image_bytes(200, 160, fmt=fmt, seed=4)
    body = classify(web, data)
    assert_classification(body, str(stack.model_dir / "resnet18.pt"), data, 5, IMAGENET)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_alpha_and_palette_images(stack: Stack, web: Web, mode: str) -> None:
    data = image_bytes(96, 96, seed=5, mode=mode)
    body = classify(web, data, model="tiny", top_n=10)
    labels = [f"class_{i}" for i in range(10)]
    assert_classification(body, str(stack.model_dir / "tiny.pt"), data, 10, labels)


def test_small_classifier_labels_and_labels_file(stack: Stack, web: Web) -> None:
    data = image_bytes(32, 48, seed=6)
    plain = classify(web, data, model="tiny", top_n=3)
    assert_classification(
        plain, str(stack.model_dir / "tiny.pt"), data, 3, [f"class_{i}" for i in range(10)]
    )
    named = classify(web, data, model="labelled", top_n=3)
    assert_classification(
        named, str(stack.model_dir / "tiny.pt"), data, 3, [f"thing-{i}" for i in range(10)]
    )


def image_to_image(web: Web, model: str, data: bytes) -> dict:
    body = {
        "data": {"B64Image": {"image": b64(data), "height": None, "width": None}},
        "inference_type": "ImageToImage",
        "model": model,
    }
    resp = web.post("/inference", json=body)
    assert resp.status_code == 200, resp.text
    inference, took = resp.json()
    assert set(took) == {"secs", "nanos"}
    return inference["B64Image"]


def test_image_to_image_three_channels(stack: Stack, web: Web) -> None:
    data = image_bytes(80, 60, seed=7)
    out = image_to_image(web, "enhancer", data)
    assert (out["height"], out["width"]) == (60, 80)
    got = decode_png(out["image"])
    ref = reference_output(str(stack.model_dir / "enhancer.pt"), data)
    assert isinstance(ref, torch.Tensor)
    expected = (ref[0].clamp(0, 1) * 255).round().to(torch.uint8)
    assert got.shape == expected.shape == (3, 60, 80)
    assert (got.int() - expected.int()).abs().max() <= 1


def test_image_to_image_segmentation(stack: Stack, web: Web) -> None:
    data = image_bytes(64, 48, seed=8)
    out = image_to_image(web, "segmenter", data)
    assert (out["height"], out["width"]) == (48, 64)
    got = decode_png(out["image"])
    ref = reference_output(str(stack.model_dir / "segmenter.pt"), data)
    classes = ref["out"][0].argmax(0) if isinstance(ref, dict) else ref[0].argmax(0)
    # the same class must always get the same colour, and different classes different colours
    assert got.shape[1:] == classes.shape
    colours = got[:3].permute(1, 2, 0).reshape(-1, 3)
    mapping: dict[int, tuple[int, ...]] = {}
    for cls, colour in zip(classes.flatten().tolist(), colours.tolist(), strict=True):
        assert mapping.setdefault(cls, tuple(colour)) == tuple(colour)
    assert len(set(mapping.values())) == len(mapping)


@pytest.mark.parametrize("key", ["Text", "text"])
@pytest.mark.parametrize("model", ["textgen", "echo"])
def test_text_to_text(stack: Stack, web: Web, key: str, model: str) -> None:
    text = "Hello, autodep! ünïcode"
    resp = web.post(
        "/inference", json={"data": {key: text}, "inference_type": "TextToText", "model": model}
    )
    assert resp.status_code == 200, resp.text
    inference, _ = resp.json()
    loaded = torch.jit.load(str(stack.model_dir / f"{model}.pt"))
    expected = loaded([text])[0] if model == "textgen" else loaded(text)
    assert inference == {"Text": expected}


def test_images_of_different_sizes_in_one_batch(stack: Stack, web: Web) -> None:
    sizes = [(224, 224), (160, 200), (224, 224), (96, 128), (160, 200), (300, 180)] * 3
    inputs = [image_bytes(w, h, seed=100 + i) for i, (w, h) in enumerate(sizes)]
    with ThreadPoolExecutor(len(inputs)) as pool:
        bodies = list(pool.map(lambda d: classify(web, d, top_n=2), inputs))
    for data, body in zip(inputs, bodies, strict=True):
        assert_classification(body, str(stack.model_dir / "resnet18.pt"), data, 2, IMAGENET)


def test_concurrent_mixed_requests_each_get_their_own_answer(stack: Stack, web: Web) -> None:
    jobs = []
    for i in range(48):
        kind = i % 4
        if kind == 0:
            jobs.append(("cls", image_bytes(64 + i, 64, seed=200 + i)))
        elif kind == 1:
            jobs.append(("tiny", image_bytes(40, 30 + i, seed=200 + i)))
        elif kind == 2:
            jobs.append(("text", f"request number {i}"))
        else:
            jobs.append(("enh", image_bytes(20 + i, 20, seed=200 + i)))

    def run(job: tuple[str, object]) -> tuple[str, object, object]:
        kind, payload = job
        if kind == "cls":
            return kind, payload, classify(web, payload, top_n=3)
        if kind == "tiny":
            return kind, payload, classify(web, payload, model="tiny", top_n=2)
        if kind == "text":
            resp = web.post(
                "/inference",
                json={
                    "data": {"Text": payload},
                    "inference_type": "TextToText",
                    "model": "textgen",
                },
            )
            assert resp.status_code == 200, resp.text
            return kind, payload, resp.json()
        return kind, payload, image_to_image(web, "enhancer", payload)

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(run, jobs))
    textgen = torch.jit.load(str(stack.model_dir / "textgen.pt"))
    for kind, payload, body in results:
        if kind == "cls":
            assert_classification(body, str(stack.model_dir / "resnet18.pt"), payload, 3, IMAGENET)
        elif kind == "tiny":
            assert_classification(
                body,
                str(stack.model_dir / "tiny.pt"),
                payload,
                2,
                [f"class_{i}" for i in range(10)],
            )
        elif kind == "text":
            assert body[0] == {"Text": textgen([payload])[0]}
        else:
            w, h = to_tensor(payload).shape[2], to_tensor(payload).shape[1]
            assert (body["width"], body["height"]) == (w, h)
