"""worker.batch.run_batch, worker.registry and worker.examples, on the real example models."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from autodep_celery import contract
from autodep_celery.config import IMAGENET_MEAN, IMAGENET_STD, ModelSettings, Settings
from autodep_celery.worker import processing, task_types
from autodep_celery.worker import registry as registry_mod
from autodep_celery.worker.batch import run_batch
from autodep_celery.worker.examples import EXAMPLE_NAMES, write_example_models
from autodep_celery.worker.registry import Registry

pytestmark = pytest.mark.unit

FAR = time.time() + 3600


def example_settings(model_dir: Path, **worker: object) -> Settings:
    """Every example model (model_dir: tests/unit/conftest.py), a few of them configured twice
    with labels, a resize or a broken file."""

    def m(name: str, file: str, **kw: object) -> ModelSettings:
        return ModelSettings(name=name, path=str(model_dir / file), **kw)  # type: ignore[arg-type]

    from autodep_celery.config import WorkerSettings

    return Settings(
        worker=WorkerSettings(**worker),  # type: ignore[arg-type]
        models=(
            m("resnet18", "resnet18.pt", task="ImageClassification"),
            m("tiny", "tiny.pt"),
            m("labelled", "tiny.pt", labels=str(model_dir / "tiny_labels.txt")),
            m("mislabelled", "tiny.pt", labels=str(model_dir / "short_labels.txt")),
            m("resized", "tiny.pt", resize=(16, 16)),
            m("segmenter", "segmenter.pt", task="ImageToImage"),
            m("enhancer", "enhancer.pt"),
            m("textgen", "textgen.pt"),
            m("echo", "echo.pt", task="TextToText"),
            m("broken", "broken.pt"),
        ),
    )


@pytest.fixture(scope="module")
def settings(model_dir: Path) -> Settings:
    return example_settings(model_dir)


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Registry:
    return Registry(settings, max_loaded=20)


def png(width: int, height: int, seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=g) * 255).to(torch.uint8)
    buf = io.BytesIO()
    Image.frombytes("RGB", (width, height), bytes(pixels.flatten().tolist())).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def cls_item(data: bytes, top_n: int | None = 3, deadline: float = FAR) -> contract.Item:
    return contract.image_item("ImageClassification", data, deadline, top_n)


def batch(model: str, items: list[contract.Item]) -> dict:
    return dict(contract.make_batch(model, "b1", "", items))


def test_examples_build_and_load(model_dir: Path, tmp_path: Path) -> None:
    paths = write_example_models(tmp_path)
    assert (
        set(paths)
        == set(EXAMPLE_NAMES)
        == {"resnet18", "segmenter", "enhancer", "textgen", "echo", "tiny", "multi"}
    )
    with torch.inference_mode():
        resnet = torch.jit.load(str(paths["resnet18"]))
        x = torch.rand(2, 3, 64, 48) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        logits = resnet(x / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        assert logits.shape == (2, 1000)
        top = torch.softmax(logits, 1).topk(5).values
        assert float(top[0, 0]) < 0.99 and float(top[0, 4]) > 1e-4  # neither flat nor one-hot
        assert torch.jit.load(str(paths["segmenter"]))(torch.rand(1, 3, 9, 11))["out"].shape == (
            1,
            21,
            9,
            11,
        )
        enhanced = torch.jit.load(str(paths["enhancer"]))(torch.rand(1, 3, 5, 5))
        assert enhanced.shape == (1, 3, 5, 5) and 0 <= float(enhanced.min()) <= 1
        assert torch.jit.load(str(paths["tiny"]))(torch.rand(3, 3, 7, 31)).shape == (3, 10)
        assert torch.jit.load(str(paths["textgen"]))(["hello big world"]) == ["WORLD BIG HELLO"]
        assert torch.jit.load(str(paths["echo"]))("hi") == "echo: hi"
    # fixed seeds: the same bytes every time
    again = write_example_models(tmp_path / "again")
    a = torch.jit.load(str(paths["tiny"])).state_dict()
    b = torch.jit.load(str(again["tiny"])).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_text_kind_from_the_schema(registry: Registry) -> None:
    assert registry.get("textgen").text_kind == task_types.TEXT_LIST
    assert registry.get("echo").text_kind == task_types.TEXT_STR
    assert registry.get("tiny").text_kind is None


def test_warm_up_learns_the_class_count(registry: Registry) -> None:
    assert registry.get("resnet18").num_classes == 1000
    assert registry.get("tiny").num_classes == 10


def test_classification_matches_in_process_and_uses_labels(
    registry: Registry, settings: Settings
) -> None:
    data = png(40, 30, seed=1)
    reply = run_batch(registry, settings, batch("resnet18", [cls_item(data, 5)]), worker="w/1")
    assert reply["batch_id"] == "b1" and reply["worker"] == "w/1"
    [result] = reply["results"]
    assert result["ok"] and result["compute_ns"] > 0
    model = torch.jit.load(settings.model("resnet18").path)  # type: ignore[union-attr]
    from autodep_celery.worker.processing import decode_image, imagenet_labels, normalise

    x = normalise(decode_image(data, 10**9).unsqueeze(0), IMAGENET_MEAN, IMAGENET_STD)
    probs = torch.softmax(model(x), 1)[0]
    top = probs.topk(5)
    got = result["output"]["Classification"]
    assert [e["label"] for e in got] == [imagenet_labels()[i] for i in top.indices.tolist()]
    assert [e["probability"] for e in got] == pytest.approx(top.values.tolist(), abs=1e-5)

    labelled = run_batch(registry, settings, batch("labelled", [cls_item(data, 10)]))
    labels = [e["label"] for e in labelled["results"][0]["output"]["Classification"]]
    assert sorted(labels) == sorted(f"thing-{i}" for i in range(10))
    plain = run_batch(registry, settings, batch("tiny", [cls_item(data, 2)]))
    assert all(
        e["label"].startswith("class_") for e in plain["results"][0]["output"]["Classification"]
    )


def test_top_n_default_and_limits(registry: Registry, settings: Settings) -> None:
    data = png(8, 8)
    reply = run_batch(
        registry,
        settings,
        batch("tiny", [cls_item(data, None), cls_item(data, 11), cls_item(data, 10)]),
    )
    first, too_many, all_ten = reply["results"]
    assert len(first["output"]["Classification"]) == contract.DEFAULT_TOP_N
    assert not too_many["ok"] and too_many["error"]["status"] == 422
    assert "11" in too_many["error"]["message"] and "10 classes" in too_many["error"]["message"]
    assert len(all_ten["output"]["Classification"]) == 10


def test_mixed_sizes_are_grouped_and_results_keep_order(
    registry: Registry, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = registry.get("tiny")
    calls: list[tuple[int, ...]] = []
    real = loaded.module

    class Spy:
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(tuple(x.shape))
            return real(x)

    monkeypatch.setattr(loaded, "module", Spy())
    sizes = [(8, 8), (16, 12), (8, 8), (16, 12), (8, 8)]
    items = [cls_item(png(w, h, seed=i), 1) for i, (w, h) in enumerate(sizes)]
    reply = run_batch(registry, settings, batch("tiny", items))
    assert sorted(calls) == [(2, 3, 12, 16), (3, 3, 8, 8)]
    monkeypatch.setattr(loaded, "module", real)
    for item, result in zip(items, reply["results"], strict=True):
        alone = run_batch(registry, settings, batch("tiny", [item]))["results"][0]
        assert (
            result["output"]["Classification"][0]["label"]
            == (alone["output"]["Classification"][0]["label"])
        )
        assert result["output"]["Classification"][0]["probability"] == pytest.approx(
            alone["output"]["Classification"][0]["probability"], abs=1e-5
        )


def test_resize_makes_one_group(registry: Registry, settings: Settings) -> None:
    items = [cls_item(png(w, h), 1) for w, h in [(8, 8), (30, 20), (64, 64)]]
    reply = run_batch(registry, settings, batch("resized", items))
    assert all(r["ok"] for r in reply["results"])
    assert len({r["compute_ns"] for r in reply["results"]}) == 1  # one forward for all three


def test_expired_items_are_not_computed(registry: Registry, settings: Settings) -> None:
    now = time.time()
    items = [cls_item(png(8, 8), 1, deadline=now - 1), cls_item(png(8, 8), 1, deadline=now + 60)]
    reply = run_batch(registry, settings, batch("tiny", items))
    expired, live = reply["results"]
    assert not expired["ok"] and expired["error"]["code"] == "deadline_exceeded"
    assert expired["error"]["status"] == 504
    assert live["ok"]


def test_bad_items_fail_alone(registry: Registry, settings: Settings) -> None:
    items = [
        cls_item(b"garbage"),
        cls_item(png(8, 8)),
        contract.text_item("hello", FAR),
        {"kind": "image", "task": "Detection", "image": png(8, 8), "deadline": FAR},
    ]
    reply = run_batch(registry, settings, batch("resnet18", items))  # type: ignore[arg-type]
    garbage, good, text, unknown = reply["results"]
    assert garbage["error"]["code"] == "invalid_image"
    assert good["ok"]
    assert text["error"]["status"] == 422 and "ImageClassification" in text["error"]["message"]
    assert unknown["error"]["status"] == 422 and "Detection" in unknown["error"]["message"]


def decoded(result: dict) -> torch.Tensor:
    """[H, W, 3] uint8 of the PNG in an ImageToImage result."""
    out = result["output"]["B64Image"]
    img = Image.open(io.BytesIO(out["image"]))
    assert (img.format, img.mode, img.size) == ("PNG", "RGB", (out["width"], out["height"]))
    raw = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return raw.view(img.height, img.width, 3)


def test_image_to_image_outputs(registry: Registry, settings: Settings) -> None:
    """The enhancer's RGB output comes back as its pixels (0..1 -> 0..255), the segmenter's
    class scores as each pixel's argmax in the fixed palette: compared with the models in
    process on the same decoded input."""
    data = png(12, 10)
    items = [contract.image_item("ImageToImage", data, FAR)]
    seg = run_batch(registry, settings, batch("segmenter", items))["results"][0]
    enh = run_batch(registry, settings, batch("enhancer", items))["results"][0]
    x = processing.decode_image(data, 10**6).unsqueeze(0)  # ImageToImage: 0..1, no normalising
    with torch.inference_mode():
        expected = registry.get("enhancer").module(x)[0].clamp(0, 1).mul(255).round()
        classes = registry.get("segmenter").module(x)["out"][0].argmax(0)
    assert torch.equal(decoded(enh), expected.to(torch.uint8).permute(1, 2, 0))
    assert torch.equal(decoded(seg), processing.palette()[classes])


def test_text_models_list_and_str(
    registry: Registry, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [contract.text_item(t, FAR) for t in ["a b", "hello world", ""]]
    listed = run_batch(registry, settings, batch("textgen", items))["results"]
    assert [r["output"]["Text"] for r in listed] == ["B A", "WORLD HELLO", ""]
    assert len({r["compute_ns"] for r in listed}) == 1  # one call for the whole group
    one = run_batch(registry, settings, batch("echo", items))["results"]
    assert [r["output"]["Text"] for r in one] == ["echo: a b", "echo: hello world", "echo: "]


def test_wrong_task_for_configured_model(registry: Registry, settings: Settings) -> None:
    item = contract.image_item("ImageToImage", png(8, 8), FAR)
    [result] = run_batch(registry, settings, batch("resnet18", [item]))["results"]
    assert result["error"]["status"] == 422 and "ImageClassification" in result["error"]["message"]


def test_model_rejecting_input_is_a_422_naming_model_and_shape(
    registry: Registry, settings: Settings
) -> None:
    # an image for a text model whose task is not configured: the forward itself fails
    item = {"kind": "image", "task": "ImageToImage", "image": png(8, 8), "deadline": FAR}
    [result] = run_batch(registry, settings, batch("textgen", [item]))["results"]  # type: ignore[list-item]
    assert result["error"]["code"] == "model_rejected_input"
    assert result["error"]["status"] == 422
    assert "textgen" in result["error"]["message"] and "[1, 3, 8, 8]" in result["error"]["message"]
    assert "\n" not in result["error"]["message"]


def test_unknown_and_broken_models_fail_the_batch(registry: Registry, settings: Settings) -> None:
    reply = run_batch(registry, settings, batch("nope", [cls_item(png(8, 8))]))
    assert reply["ok"] is False and reply["error"]["code"] == "unknown_model"
    reply = run_batch(registry, settings, batch("broken", [cls_item(png(8, 8))]))
    assert reply["ok"] is False and reply["error"]["code"] == "model_load_failed"
    assert "broken" in reply["error"]["message"]


def test_labels_file_length_checked_at_load(registry: Registry) -> None:
    with pytest.raises(registry_mod.ModelLoadError, match="2 lines but the model outputs 10"):
        registry.get("mislabelled")


def test_registry_keeps_at_most_max_loaded(settings: Settings) -> None:
    small = Registry(settings, max_loaded=2)
    assert small.preload(["tiny", "echo", "textgen"]) == ["tiny", "echo"]
    small.get("tiny")  # most recently used
    small.get("textgen")
    assert small.loaded_names() == ["tiny", "textgen"]
    assert small.preload(["broken"]) == []


class PickyText(torch.nn.Module):
    """Fails the whole call when any string is "boom"."""

    def forward(self, texts: list[str]) -> list[str]:
        for t in texts:
            if t == "boom":
                raise RuntimeError("cannot say boom")
        return [t + "!" for t in texts]


class PickyImage(torch.nn.Module):
    """Fails the whole batch when any image is all white."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.flatten(1).min(dim=1).values > 0.99).any()):
            raise RuntimeError("white image")
        return x.mean(dim=(2, 3))


def white_png(size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (255, 255, 255)).save(buf, format="PNG")
    return buf.getvalue()


def test_one_bad_input_fails_alone_in_a_batch(tmp_path: Path) -> None:
    torch.jit.script(PickyText()).save(str(tmp_path / "picky_text.pt"))
    torch.jit.script(PickyImage()).save(str(tmp_path / "picky_image.pt"))
    settings = Settings(
        models=(
            ModelSettings("pt", str(tmp_path / "picky_text.pt"), task="TextToText"),
            ModelSettings(
                "pi",
                str(tmp_path / "picky_image.pt"),
                task="ImageClassification",
                mean=(0.0, 0.0, 0.0),
                std=(1.0, 1.0, 1.0),
            ),
        )
    )
    reg = Registry(settings)
    texts = [contract.text_item(t, FAR) for t in ("a", "boom", "c")]
    got = run_batch(reg, settings, batch("pt", texts))["results"]
    assert [r.get("output") for r in got] == [{"Text": "a!"}, None, {"Text": "c!"}]
    assert got[1]["error"]["code"] == "model_rejected_input" and got[1]["error"]["status"] == 422
    images = [
        cls_item(png(8, 8, seed=1), top_n=1),
        cls_item(white_png()),
        cls_item(png(8, 8, seed=2), top_n=1),
    ]
    got = run_batch(reg, settings, batch("pi", images))["results"]
    assert [r["ok"] for r in got] == [True, False, True]
    assert "white image" in got[1]["error"]["message"]
