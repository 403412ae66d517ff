"""Video backbones by name (``model.backbone``): clips ``[N, C, T, H, W]`` -> ``[N, D]``.

torchvision's registry supplies each network, its input statistics, smallest input and
Kinetics-400 weights (through torch.hub's cache); they are read from it, not restated here.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from omegaconf import DictConfig
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights

from mvfoul.data.video import configured_window
from mvfoul.errors import ConfigError, WeightsUnavailableError
from mvfoul.validate import Problems, cross_key_rule

# Seconds without a byte arriving (DNS, connect or read) before a download is given up. It bounds
# a stall, not the whole download: a 140 MB file on a slow link may take minutes.
DOWNLOAD_STALL_TIMEOUT_S = 15.0

# Quoted in messages: the frame window every dataset config ships with is the known-good 16.
_DEFAULT_WINDOW = "the default dataset.start_frame=63, end_frame=87, fps=17 gives 16"


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    name: str  # model.backbone
    torchvision_name: str | None  # None: not torchvision's
    weights: WeightsEnum | None  # Kinetics-400
    # Blocks, stem first: "a.b" is one block, "a.*" makes each child of a a block, and a leading
    # "+" adds the module to the block before.
    layout: tuple[str, ...]
    min_frames: int
    min_size: int  # square frames, side in px
    mean: tuple[float, ...]  # input normalisation: its weights' transforms()
    std: tuple[float, ...]
    exact: bool = False  # accepts only min_frames of min_size

    def input_problem(self, num_frames: int, frame_size: int) -> str | None:
        """None when the input is accepted, else one line saying which settings would work."""
        frames, size = self.min_frames, self.min_size
        if self.exact:
            frames_ok, size_ok = num_frames == frames, frame_size == size
            rule = f"accepts only {frames} frames of {size}x{size}"
            frames_fix = f"a window giving {frames} frames ({_DEFAULT_WINDOW})"
            size_fix = f"dataset.frame_size={size}"
        else:
            frames_ok, size_ok = num_frames >= frames, frame_size >= size
            frames_text = f"{frames} frame" if frames == 1 else f"{frames} frames"
            rule = f"needs at least {frames_text} of at least {size}x{size}"
            frames_fix = f"a window giving at least {frames} frames ({_DEFAULT_WINDOW})"
            # 224 is what the Kinetics weights were trained at; suggest it where it qualifies.
            size_fix = f"dataset.frame_size>={size} (e.g. {max(size, 224)})"
        fixes = [fix for fix, ok in ((size_fix, size_ok), (frames_fix, frames_ok)) if not ok]
        if not fixes:
            return None
        got = f"got {num_frames} frames of {frame_size}"
        return f"{self.name} {rule} ({got}): set {' and '.join(fixes)}"


class TinyVideoCNN(nn.Module):
    """A small random-init 3-D CNN for tests and CPU debugging; takes any frame count and size."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        # Keep time in the stem (clips are short), halve it afterwards like space.
        stages = []
        for i, (c_in, c_out) in enumerate(zip((3, *widths), widths)):
            conv = nn.Conv3d(
                c_in, c_out, 3, stride=(1 if i == 0 else 2, 2, 2), padding=1, bias=False
            )
            stages.append(nn.Sequential(conv, nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)))
        self.stages = nn.Sequential(*stages)
        self.feature_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x).mean(dim=(2, 3, 4))


def _spec(name: str, tv_name: str | None, layout: tuple[str, ...], **measured: Any) -> BackboneSpec:
    """The spec as torchvision's weights entry declares it, but for the ``measured`` fields."""
    # The tiny backbone has no weights of its own and is fed what the ResNet-3D family is.
    weights = get_model_weights(tv_name or "r3d_18")["KINETICS400_V1"]
    preset = weights.transforms()
    facts: dict[str, Any] = {
        "min_frames": weights.meta.get("min_temporal_size", 1),
        "min_size": min(weights.meta["min_size"]),
        "mean": tuple(preset.mean),
        "std": tuple(preset.std),
    }
    return BackboneSpec(name, tv_name, weights if tv_name else None, layout, **(facts | measured))


_MVIT = ("conv_proj", "+pos_encoding", "blocks.*", "+norm")
_RESNET3D = ("stem", "layer1", "layer2", "layer3", "layer4")
# Swin's features alternate stage, PatchMerging, ...: a merging layer closes its stage (as in the
# original Swin's BasicLayer), so unfreezing one block never leaves half a stage frozen.
_SWIN = (
    "patch_embed",
    "+pos_drop",
    "features.0",
    "+features.1",
    "features.2",
    "+features.3",
    "features.4",
    "+features.5",
    "features.6",
    "+norm",
)

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        # MViT's positional embeddings are sized for its Kinetics input: other sizes fail or run
        # with positions that mean something else, so the declared minimum is the only input.
        _spec("mvit_base_16x4", "mvit_v1_b", _MVIT, exact=True),
        _spec("mvit_v2_s", "mvit_v2_s", _MVIT, exact=True),
        _spec("r3d_18", "r3d_18", _RESNET3D),
        _spec("r2plus1d_18", "r2plus1d_18", _RESNET3D),
        _spec("mc3_18", "mc3_18", _RESNET3D),
        # torchvision declares 14 frames of 224 (what it was trained with); the network runs from
        # 13 frames of 209 px (its final 2x7x7 pool), measured, and configs rely on that.
        _spec("s3d", "s3d", ("features.*",), min_frames=13, min_size=209),
        _spec("swin3d_t", "swin3d_t", _SWIN),
        _spec("tiny", None, ("stages.*",)),
    )
}


class Backbone(nn.Module):
    """A video network without its classifier, in ``self.net`` under torchvision's own names."""

    def __init__(self, spec: BackboneSpec, net: nn.Module, feature_dim: int, head: str | None):
        super().__init__()
        self.spec = spec
        self.net = net
        self.feature_dim = feature_dim
        self.head_name = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Cheap (Python ints), and says which settings work where MViT would raise a shape error.
        _, _, frames, height, width = x.shape
        problem = self.spec.input_problem(frames, height) or self.spec.input_problem(frames, width)
        if problem:
            raise ValueError(problem)
        return self.net(x)

    def blocks(self) -> list[nn.Module]:
        """The blocks, stem to top, for "unfreeze the top k blocks"; every parameter is in exactly
        one. A block of several modules is an unregistered ``nn.ModuleList`` view; one without
        parameters (a pool) joins the next, so unfreezing a block always does something."""
        groups: list[list[nn.Module]] = []
        for item in self.spec.layout:
            path = item.lstrip("+")
            if path.endswith(".*"):
                groups += [[child] for child in self.net.get_submodule(path[:-2]).children()]
            elif item.startswith("+"):
                groups[-1].append(self.net.get_submodule(path))
            else:
                groups.append([self.net.get_submodule(path)])
        merged: list[list[nn.Module]] = [[]]
        for group in groups:
            if any(list(module.parameters()) for module in merged[-1]):
                merged.append([])  # the block so far has parameters: close it
            merged[-1] += group
        return [group[0] if len(group) == 1 else nn.ModuleList(group) for group in merged]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _backbone_tensors(loaded: object, head: str | None) -> dict[str, torch.Tensor]:
    """The backbone's entries in a loaded file under torchvision's names: from a state dict, raw
    or under "state_dict"/"model", keyed as torchvision, a Backbone (``net.``), under a
    ``backbone.`` component (a MultiViewNet, maybe in a Lightning module) or by DDP (``module.``)."""
    for _ in range(3):  # a Lightning checkpoint nests once; allow a little more
        if isinstance(loaded, Mapping):
            loaded = loaded.get("state_dict", loaded.get("model", loaded))
    if not isinstance(loaded, Mapping):
        return {}
    items = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    # Where there is a "backbone" component, only the entries after it.
    inside = {}
    for key, value in items.items():
        parts = key.split(".")
        if "backbone" in parts:
            inside[".".join(parts[parts.index("backbone") + 1 :])] = value
    items = inside or items
    for prefix in ("module.", "net."):
        if items and all(k.startswith(prefix) for k in items):
            items = {k[len(prefix) :]: v for k, v in items.items()}
    # torchvision files carry the 400-way Kinetics classifier; our heads replace it.
    return {k: v for k, v in items.items() if k.split(".")[0] != head}


def _load(backbone: Backbone, read: Callable[[], object], what: str, fix: str) -> None:
    """Load what ``read()`` returns into ``backbone.net``. Every problem is one
    WeightsUnavailableError naming the file (``what``) and what the user can do (``fix``)."""
    name = backbone.spec.name
    try:
        tensors = _backbone_tensors(read(), backbone.head_name)
    except WeightsUnavailableError:
        raise
    except Exception as exc:  # any unreadable file is the same problem to the user
        reason = f"{type(exc).__name__}: {_one_line(exc)[:200]}"
        raise WeightsUnavailableError(
            f"{what} for {name} cannot be read ({reason}); {fix}"
        ) from None
    if not tensors:
        raise WeightsUnavailableError(
            f"{what} for {name} holds no state dict of tensors "
            f"(raw, or under 'state_dict'/'model'); {fix}"
        )
    expected = backbone.net.state_dict()
    # Older files lack BatchNorm's batch counters, which BatchNorm treats as optional: fill them.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            tensors.setdefault(key, value.clone())
    problems = {
        "missing keys": sorted(k for k in expected if k not in tensors),
        "unexpected keys": sorted(k for k in tensors if k not in expected),
        "shape mismatches": [
            f"{k} (file {list(tensors[k].shape)} vs model {list(v.shape)})"
            for k, v in expected.items()
            if k in tensors and tensors[k].shape != v.shape
        ],
    }
    parts = []
    for kind, keys in problems.items():
        if keys:
            more = ", ..." if len(keys) > 2 else ""
            parts.append(f"{len(keys)} {kind} (e.g. {', '.join(keys[:2])}{more})")
    if parts:
        raise WeightsUnavailableError(
            f"{what} does not match backbone {name}: {'; '.join(parts)}; expected a state dict "
            f"of {name} (with or without its classifier head, optionally under 'backbone.'); "
            f"{fix}"
        )
    try:
        backbone.net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # dtype or other surprises the key check did not catch
        raise WeightsUnavailableError(
            f"{what} does not load into backbone {name}: {_one_line(exc)[:300]}; {fix}"
        ) from None


def hub_weights_path(name: str) -> Path:
    """Where torch.hub's cache keeps the Kinetics-400 weights of backbone ``name``."""
    weights = BACKBONES[name].weights
    assert weights is not None, name
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def _hub_state_dict(weights: WeightsEnum, path: Path) -> object:
    """``weights.get_state_dict()``: torch.hub's cached file at ``path``, downloaded when absent.
    torch.hub sets no timeout and none bounds a DNS lookup, so this runs in a daemon thread, given
    up after ``DOWNLOAD_STALL_TIMEOUT_S`` without a byte arriving in torch.hub's partial file."""
    result: dict[str, Any] = {}

    def fetch() -> None:
        try:
            result["state"] = weights.get_state_dict(
                progress=False, check_hash=True, map_location="cpu", weights_only=True
            )
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=fetch, name="mvfoul-weights-download", daemon=True)
    thread.start()
    seen, since = -1, time.monotonic()
    while thread.is_alive():
        thread.join(0.1)
        if thread.is_alive() and not path.is_file():  # once in the cache, loading is local
            partials = list(path.parent.glob(f"{path.name}.*.partial"))
            try:
                size = sum(p.stat().st_size for p in partials)
            except OSError:  # renamed or removed meanwhile: no news this time
                size = seen
            if size != seen:
                seen, since = size, time.monotonic()
            elif time.monotonic() - since > DOWNLOAD_STALL_TIMEOUT_S:
                for partial in partials:  # stalled, so litter: the thread may never wake to clean
                    partial.unlink(missing_ok=True)
                raise TimeoutError(f"no response for {DOWNLOAD_STALL_TIMEOUT_S:g} s (no network?)")
    if "error" in result:
        raise result["error"]
    return result["state"]


def build_backbone(
    name: str, pretrained: bool = False, weights_path: str | None = None
) -> Backbone:
    """Build backbone ``name`` with the weights of ``weights_path`` (a local state dict) or else,
    if ``pretrained``, its Kinetics-400 weights."""
    if name not in BACKBONES:
        raise ConfigError(
            f"model.backbone={name!r} is not a backbone; choose one of: {', '.join(BACKBONES)}"
        )
    spec = BACKBONES[name]
    if spec.torchvision_name is None:
        tiny = TinyVideoCNN()
        backbone = Backbone(spec, tiny, tiny.feature_dim, head=None)
    else:
        net = get_model(spec.torchvision_name)
        # torchvision puts the classifier last; its input width is the feature width.
        head, classifier = list(net.named_children())[-1]
        dim = next(p for p in classifier.parameters() if p.dim() >= 2).shape[1]
        setattr(net, head, nn.Identity())
        backbone = Backbone(spec, net, int(dim), head)

    if weights_path is not None:
        path = Path(weights_path).expanduser()
        fix = "set model.weights_path to a state dict of this backbone, or to null"
        read = functools.partial(torch.load, path, map_location="cpu", weights_only=True)
        _load(backbone, read, f"weights file {path}", fix)
    elif pretrained:
        weights = spec.weights
        if weights is None:
            raise WeightsUnavailableError(
                f"backbone {name} has no pretrained weights; set model.pretrained=false "
                "or model.weights_path=/path/to/file.pth"
            )
        path = hub_weights_path(name)
        fix = (
            f"download it on a machine with internet and put it at {path}, "
            "or set model.weights_path=/path/to/file.pth, or set model.pretrained=false"
        )

        def read_hub() -> object:
            cached = path.is_file()
            try:
                return _hub_state_dict(weights, path)
            except Exception as exc:
                if cached or path.is_file():
                    raise  # there, but unreadable: _load says so
                reason = _one_line(getattr(exc, "reason", None) or exc)
                raise WeightsUnavailableError(
                    f"cannot get {weights!r} for {name} from {weights.url}: "
                    f"{type(exc).__name__}: {reason}; {fix}"
                ) from None

        what = f"cached Kinetics-400 weights {path}"
        _load(backbone, read_hub, what, f"delete the file to download it again, or {fix}")
    return backbone


@cross_key_rule("model")
def check_backbone_input(cfg: DictConfig, p: Problems) -> dict[str, Any] | None:
    """The backbone exists, takes this window and frame size, and has the weights asked for;
    derives the input normalisation: dataset.mean/std, or the backbone's own."""
    model = cfg.model
    if model.backbone not in BACKBONES:
        p.choice("model.backbone", model.backbone, BACKBONES)
        return None
    spec = BACKBONES[model.backbone]
    if model.weights_path is not None and not Path(model.weights_path).expanduser().is_file():
        p.add(
            "model.weights_path",
            f"{model.weights_path!r} is not a file: give the path of a saved state dict, or null",
        )
    if model.backbone == "tiny" and model.pretrained and model.weights_path is None:
        p.add(
            "model.pretrained",
            "the tiny backbone has no pretrained weights: set model.pretrained=false",
        )
    indices = configured_window(cfg.dataset)
    if indices is not None:
        problem = spec.input_problem(len(indices), cfg.dataset.frame_size)
        if problem:
            p.add("model.backbone", problem)
    normalisation = {}
    for key in ("mean", "std"):
        values = cfg.dataset.get(key)
        normalisation[key] = getattr(spec, key) if values is None else tuple(map(float, values))
    return normalisation
