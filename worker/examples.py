"""Example TorchScript models built by the project itself: no downloads, fixed seeds.

Used by `autodep example-models DIR`, by the tests and by bench/. Every model is plain torch.nn
(no torchvision) so the files are reproducible on any machine with torch. Imports torch: only
worker code, the CLI's example-models command and bench/ may import this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple  # noqa: UP035 - TorchScript needs typing generics in signatures

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autodep_celery.config import IMAGENET_MEAN, IMAGENET_STD

RESNET_LOGIT_STD = 3.0
"""Spread of the example ResNet-18's logits on a normalised random image: top-5 distinct."""


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Sequential()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class ResNet18(nn.Module):
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]) with the usual stem and a 1000-way head."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 3, 2, 1)
        x = self.layers(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        logits: Tensor = self.fc(x)
        return logits


class Segmenter(nn.Module):
    """Segmentation-shaped ImageToImage model: {"out": [B, 21, H, W]} like torchvision's."""

    def __init__(self, num_classes: int = 21) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:  # noqa: UP006
        return {"out": self.head(self.body(x))}


class Enhancer(nn.Module):
    """ImageToImage model returning a 3-channel image in 0..1."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.net(x) + x)


class TextGen(nn.Module):
    """TextToText over a whole batch: words in reverse order, ASCII upper-cased.

    TorchScript strings are bytes, so reversing characters would split UTF-8 sequences;
    reversing whole words and upper-casing ASCII keep any UTF-8 input valid.
    """

    def forward(self, texts: List[str]) -> List[str]:  # noqa: UP006
        out: List[str] = []  # noqa: UP006
        for text in texts:
            words = text.split(" ")
            words.reverse()
            out.append(" ".join(words).upper())
        return out


class Echo(nn.Module):
    """TextToText over one string at a time."""

    def forward(self, text: str) -> str:
        return "echo: " + text


class Tiny(nn.Module):
    """A 10-class classifier that costs almost nothing: measures serving overhead."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(48, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, 4), 1)
        logits: Tensor = self.fc2(F.relu(self.fc1(x)))
        return logits


class Multi(nn.Module):
    """torch-serving's example signature (its example/create_model.py, with a small layer): a
    list, a dict, a scalar and a string in, nested tuples, lists and scalars out. Served with
    ``task = "Tensor"`` (POST /serve, /v2, inference_type Tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 3)

    def forward(
        self,
        tensor_list: List[Tensor],  # noqa: UP006
        single_tensor: Tensor,
        tensor_dict: Dict[str, Tensor],  # noqa: UP006
        an_integer: int,
        a_string: str,
    ) -> Dict[str, Tuple[List[Tensor], str, int]]:  # noqa: UP006
        x = tensor_list[0]
        y = tensor_list[1]
        first = self.fc(x + tensor_dict["x"]) + y * 2
        second = y + single_tensor + tensor_dict["y"] + an_integer
        return {"out": ([first, second], a_string, an_integer)}


def _resnet18() -> nn.Module:
    model = ResNet18().eval()
    # Random convolutions leave the pooled features at an arbitrary scale; rescale the head so
    # the logits on a random image have a known spread (softmax neither flat nor one-hot).
    with torch.no_grad():
        probe = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        probe = (probe - mean) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        std = float(model(probe).std())
        model.fc.weight.mul_(RESNET_LOGIT_STD / max(std, 1e-6))
        model.fc.bias.zero_()
    return model


_BUILDERS = {
    "resnet18": _resnet18,
    "segmenter": lambda: Segmenter().eval(),
    "enhancer": lambda: Enhancer().eval(),
    "textgen": lambda: TextGen().eval(),
    "echo": lambda: Echo().eval(),
    "tiny": lambda: Tiny().eval(),
    "multi": lambda: Multi().eval(),
}
EXAMPLE_NAMES = tuple(_BUILDERS)


def write_example_models(directory: str | Path) -> dict[str, Path]:
    """Build every example model with seed 0 and save it as ``<name>.pt`` in `directory`."""
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, build in _BUILDERS.items():
        torch.manual_seed(0)
        scripted = torch.jit.script(build())  # type: ignore[no-untyped-call]  # untyped in torch
        path = out_dir / f"{name}.pt"
        scripted.save(str(path))  # type: ignore[no-untyped-call]  # untyped in torch
        paths[name] = path
    return paths
