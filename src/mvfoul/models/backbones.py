"""Video backbones by name: ``model.backbone`` in the YAML picks one, :func:`build_backbone` builds it.

Every backbone is wrapped in :class:`Backbone`, which gives them one shape so the rest of mvfoul
never needs to know which network it holds:

* ``forward`` maps a clip batch ``[N, C, T, H, W]`` to features ``[N, feature_dim]`` (the
  torchvision classification head is removed);
* ``blocks()`` lists the network's blocks from the stem to the top, each holding parameters, so
  that "unfreeze the top k blocks" means the same thing for every backbone;
* :class:`BackboneSpec` states which inputs it accepts, so a bad ``dataset.frame_size`` or frame
  window is reported at startup in one line instead of as a shape error deep in a forward pass.

Weights come from torchvision's Kinetics-400 weight enums (``pretrained=True``), looked up in
torchvision's own cache first and otherwise downloaded with a stall timeout, or from a local
file (``weights_path``). Every failure is a one-line :class:`~mvfoul.errors.WeightsUnavailableError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import video as tv_video
from torchvision.models._api import WeightsEnum

from mvfoul.data.transforms import KINETICS_MEAN, KINETICS_STD
from mvfoul.errors import ConfigError, WeightsUnavailableError

log = logging.getLogger(__name__)

# Seconds without a single byte arriving (DNS, connect or read) before a download is abandoned.
# It bounds a stall, not the whole download: a 140 MB file on a slow link may take minutes.
DOWNLOAD_STALL_TIMEOUT_S = 15.0

# The frame window every dataset config ships with; quoted in messages because it is the
# known-good way to get 16 frames.
_DEFAULT_WINDOW = "the default dataset.start_frame=63, end_frame=87, fps=17 gives 16"


# The Kinetics-400 statistics of torchvision's ResNet-3D family (R3D, R(2+1)D, MC3) and S3D:
# what the tiny backbone, which has no weights of its own, is fed too.
R3D_MEAN, R3D_STD = KINETICS_MEAN, KINETICS_STD


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is, which inputs it accepts (measured on torchvision 0.29) and how they
    are normalised (``mean``/``std``, read from its torchvision weights' ``transforms()``)."""

    name: str  # the config name (model.backbone)
    description: str  # one line, for --help and errors
    feature_dim: int
    exact_frames: int | None  # None = no exact requirement
    min_frames: int
    exact_size: int | None  # square frames, side in px; None = no exact requirement
    min_size: int
    torchvision_name: str | None = (
        None  # torchvision.models.get_model(name); None: not torchvision's
    )
    mean: tuple[float, ...] = R3D_MEAN  # per-channel input mean the weights were trained with
    std: tuple[float, ...] = R3D_STD

    def input_problem(self, num_frames: int, frame_size: int) -> str | None:
        """None when ``num_frames`` frames of ``frame_size`` px are accepted, else one line
        saying what this backbone accepts and which settings would work."""
        frames_ok = (
            num_frames == self.exact_frames
            if self.exact_frames is not None
            else num_frames >= self.min_frames
        )
        size_ok = (
            frame_size == self.exact_size
            if self.exact_size is not None
            else frame_size >= self.min_size
        )
        if frames_ok and size_ok:
            return None

        if self.exact_frames is not None:
            frames_rule = f"only {self.exact_frames} frames"
            frames_fix = f"a window giving {self.exact_frames} frames ({_DEFAULT_WINDOW})"
        else:
            frames_rule = f"at least {self.min_frames} frame{'s' if self.min_frames != 1 else ''}"
            frames_fix = f"a window giving at least {self.min_frames} frames ({_DEFAULT_WINDOW})"
        if self.exact_size is not None:
            size_rule = f"of {self.exact_size}x{self.exact_size}"
            size_fix = f"dataset.frame_size={self.exact_size}"
        else:
            size_rule = f"of at least {self.min_size}x{self.min_size}"
            # 224 is what the Kinetics weights were trained at; suggest it where it qualifies.
            suggestion = 224 if self.min_size <= 224 else self.min_size
            size_fix = f"dataset.frame_size>={self.min_size} (e.g. {suggestion})"

        fixes = [fix for ok, fix in ((size_ok, size_fix), (frames_ok, frames_fix)) if not ok]
        verb = "accepts" if self.exact_frames is not None else "needs"
        return (
            f"{self.name} {verb} {frames_rule} {size_rule} "
            f"(got {num_frames} frames of {frame_size}): set {' and '.join(fixes)}"
        )


class TinyVideoCNN(nn.Module):
    """A small 3-D CNN (conv-BN-ReLU stages, global average pool) for tests and CPU debugging.

    It has no pretrained weights and is not meant for results; it exists so the whole system can
    be exercised in seconds on a laptop. Any frame count and size >= 1 works (padded stride-2
    convolutions never shrink a dimension below 1).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        stages = []
        in_channels = 3
        for i, width in enumerate(widths):
            # Keep time in the stem (clips are short), halve it afterwards like space.
            stride = (1, 2, 2) if i == 0 else (2, 2, 2)
            stages.append(
                nn.Sequential(
                    nn.Conv3d(
                        in_channels, width, kernel_size=3, stride=stride, padding=1, bias=False
                    ),
                    nn.BatchNorm3d(width),
                    nn.ReLU(inplace=True),
                )
            )
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.feature_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x.mean(dim=(2, 3, 4))


# --- block lists: ordered groups of modules, stem first --------------------------------------


def _child(net: nn.Module, name: str) -> nn.Module:
    return net.get_submodule(name)


def _children(net: nn.Module, name: str) -> Iterable[nn.Module]:
    return cast(nn.Sequential, net.get_submodule(name))


def _resnet3d_blocks(net: nn.Module) -> list[list[nn.Module]]:
    return [[_child(net, n)] for n in ("stem", "layer1", "layer2", "layer3", "layer4")]


def _mvit_blocks(net: nn.Module) -> list[list[nn.Module]]:
    # The final norm rides with the last transformer block: a norm-only "top block" would make
    # unfreeze_blocks=1 almost a no-op here while it unfreezes all of layer4 on a ResNet.
    groups: list[list[nn.Module]] = [[_child(net, "conv_proj"), _child(net, "pos_encoding")]]
    groups += [[block] for block in _children(net, "blocks")]
    groups[-1].append(_child(net, "norm"))
    return groups


def _s3d_blocks(net: nn.Module) -> list[list[nn.Module]]:
    # Max-pools hold no parameters; _merge_parameterless puts each with the block it feeds.
    return [[child] for child in _children(net, "features")]


def _swin3d_blocks(net: nn.Module) -> list[list[nn.Module]]:
    # torchvision lays features out as stage, PatchMerging, stage, ..., stage. The merging layer
    # closes its stage (as in the original Swin's BasicLayer); the final norm joins the last.
    groups: list[list[nn.Module]] = [[_child(net, "patch_embed"), _child(net, "pos_drop")]]
    for i, child in enumerate(_children(net, "features")):
        if i % 2 == 0:
            groups.append([child])
        else:
            groups[-1].append(child)
    groups[-1].append(_child(net, "norm"))
    return groups


def _tiny_blocks(net: nn.Module) -> list[list[nn.Module]]:
    return [[stage] for stage in _children(net, "stages")]


def _has_parameters(modules: list[nn.Module]) -> bool:
    return any(True for m in modules for _ in m.parameters())


def _merge_parameterless(groups: list[list[nn.Module]]) -> list[list[nn.Module]]:
    """Fold parameter-free groups into the next group that has parameters (or the last one),
    so that unfreezing any single block always changes something."""
    merged: list[list[nn.Module]] = []
    pending: list[nn.Module] = []
    for group in groups:
        pending = pending + group
        if _has_parameters(pending):
            merged.append(pending)
            pending = []
    if pending:
        merged[-1] = merged[-1] + pending
    return merged


# --- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recipe:
    """How to build a registered backbone; private because only the spec is a public contract."""

    build: Callable[[], nn.Module]  # the bare network, random init
    weights: WeightsEnum | None  # its Kinetics-400 weights, None when there are none
    head: str | None  # attribute of the classification head, replaced by Identity
    blocks: Callable[[nn.Module], list[list[nn.Module]]]


_ANY: dict[str, Any] = dict(exact_frames=None, min_frames=1, exact_size=None, min_size=1)
_ENTRIES: list[tuple[BackboneSpec, _Recipe]] = [
    (
        BackboneSpec(
            "mvit_base_16x4",
            "MViT-v1-B 16x4, Kinetics-400 (the VARS baseline); only 16 frames of 224x224",
            768,
            exact_frames=16,
            min_frames=16,
            exact_size=224,
            min_size=224,
        ),
        _Recipe(
            tv_video.mvit_v1_b, tv_video.MViT_V1_B_Weights.KINETICS400_V1, "head", _mvit_blocks
        ),
    ),
    (
        BackboneSpec(
            "mvit_v2_s",
            "MViT-v2-S, Kinetics-400; only 16 frames of 224x224",
            768,
            exact_frames=16,
            min_frames=16,
            exact_size=224,
            min_size=224,
        ),
        _Recipe(
            tv_video.mvit_v2_s, tv_video.MViT_V2_S_Weights.KINETICS400_V1, "head", _mvit_blocks
        ),
    ),
    (
        BackboneSpec("r3d_18", "ResNet3D-18, Kinetics-400; any frame count and size", 512, **_ANY),
        _Recipe(tv_video.r3d_18, tv_video.R3D_18_Weights.KINETICS400_V1, "fc", _resnet3d_blocks),
    ),
    (
        BackboneSpec(
            "r2plus1d_18", "R(2+1)D-18, Kinetics-400; any frame count and size", 512, **_ANY
        ),
        _Recipe(
            tv_video.r2plus1d_18,
            tv_video.R2Plus1D_18_Weights.KINETICS400_V1,
            "fc",
            _resnet3d_blocks,
        ),
    ),
    (
        BackboneSpec(
            "mc3_18",
            "MC3-18 mixed convolutions, Kinetics-400; any frame count and size",
            512,
            **_ANY,
        ),
        _Recipe(tv_video.mc3_18, tv_video.MC3_18_Weights.KINETICS400_V1, "fc", _resnet3d_blocks),
    ),
    (
        # Its final 2x7x7 average pool needs >= 2 time steps and >= 7x7 cells: measured, 13
        # frames and 209 px are the smallest inputs that get there (12 frames or 208 px fail).
        BackboneSpec(
            "s3d",
            "S3D, Kinetics-400; at least 13 frames of 209x209 (224 is what it was trained at)",
            1024,
            exact_frames=None,
            min_frames=13,
            exact_size=None,
            min_size=209,
        ),
        _Recipe(tv_video.s3d, tv_video.S3D_Weights.KINETICS400_V1, "classifier", _s3d_blocks),
    ),
    (
        BackboneSpec(
            "swin3d_t", "Video Swin-T, Kinetics-400; any frame count and size", 768, **_ANY
        ),
        _Recipe(
            tv_video.swin3d_t, tv_video.Swin3D_T_Weights.KINETICS400_V1, "head", _swin3d_blocks
        ),
    ),
    (
        BackboneSpec(
            "tiny",
            "small 3-D CNN, random init, no pretrained weights: for tests and CPU debugging",
            128,
            **_ANY,
        ),
        _Recipe(TinyVideoCNN, None, None, _tiny_blocks),
    ),
]


def _with_weight_facts(spec: BackboneSpec, recipe: _Recipe) -> BackboneSpec:
    """The spec with what torchvision's weights entry states: the model's registry name and the
    input statistics its ``transforms()`` normalise with (not restated here, so they cannot drift)."""
    if recipe.weights is None:
        return spec
    preset = recipe.weights.transforms()
    return dataclasses.replace(
        spec,
        torchvision_name=recipe.build.__name__,
        mean=tuple(float(v) for v in preset.mean),
        std=tuple(float(v) for v in preset.std),
    )


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: _with_weight_facts(spec, recipe) for spec, recipe in _ENTRIES
}
_RECIPES: dict[str, _Recipe] = {spec.name: recipe for spec, recipe in _ENTRIES}


class Backbone(nn.Module):
    """A registered video network without its classification head.

    ``forward``: ``[N, C, T, H, W]`` float -> ``[N, feature_dim]``. The wrapped network lives in
    ``self.net`` with torchvision's own module names, so its weights load from torchvision files.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        net: nn.Module,
        block_groups: Callable[[nn.Module], list[list[nn.Module]]],
    ):
        super().__init__()
        self.spec = spec
        self.net = net
        self._block_groups = block_groups

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(
                f"{self.name} expects clips [N, C, T, H, W], got shape {list(x.shape)}"
            )
        # Checking costs nothing (Python ints) and turns MViT's positional-embedding shape error
        # into a message that says which settings work.
        _, _, frames, height, width = x.shape
        problem = self.spec.input_problem(frames, height) or self.spec.input_problem(frames, width)
        if problem:
            raise ValueError(problem)
        return self.net(x)

    def blocks(self) -> list[nn.Module]:
        """The network's blocks from the stem to the top; every parameter is in exactly one.

        A block made of several modules (e.g. MViT's patch projection and positional encoding)
        comes as an ``nn.ModuleList`` view of them; it is not registered on the backbone, so the
        state dict is unaffected.
        """
        groups = _merge_parameterless(self._block_groups(self.net))
        return [group[0] if len(group) == 1 else nn.ModuleList(group) for group in groups]


# --- weights ------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _first_line(text: object) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _examples(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (", ..." if len(keys) > limit else "")


def _extract_state_dict(obj: object) -> Mapping[str, object] | None:
    """The tensor dict inside a loaded file: raw, or under "state_dict"/"model" (Lightning and
    common training scripts), None when there is none."""
    for _ in range(3):  # a Lightning checkpoint nests once; allow a little more
        if not isinstance(obj, Mapping):
            return None
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            return obj
    return obj if isinstance(obj, Mapping) else None


def _normalise_keys(state: Mapping[str, object]) -> dict[str, object]:
    """Map keys onto torchvision's names for the network.

    Accepted forms: torchvision's own keys; ``net.``-prefixed keys (a :class:`Backbone`); keys
    under a ``backbone.`` component (a MultiViewNet, possibly inside a Lightning module), of which
    only the backbone's are kept; and DDP's ``module.`` prefix.
    """
    items = {str(k): v for k, v in state.items()}
    if any(k.startswith("backbone.") or ".backbone." in k for k in items):
        kept = {}
        for key, value in items.items():
            parts = key.split(".")
            if "backbone" in parts:
                kept[".".join(parts[parts.index("backbone") + 1 :])] = value
        items = kept
    for prefix in ("module.", "net."):
        if items and all(k.startswith(prefix) for k in items):
            items = {k[len(prefix) :]: v for k, v in items.items()}
    return items


def _load_state_file(backbone: Backbone, path: Path, head: str | None, what: str, fix: str) -> None:
    """Load a weights file into ``backbone.net``; any mismatch is one WeightsUnavailableError.

    ``what`` names the file in messages ("weights file X", "cached Kinetics weights X") and
    ``fix`` ends every message with what the user can do.
    """
    if not path.is_file():
        raise WeightsUnavailableError(f"{what} for {backbone.name}: no such file; {fix}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        reason = _first_line(exc) or type(exc).__name__
        raise WeightsUnavailableError(
            f"{what} for {backbone.name} cannot be read ({type(exc).__name__}: {reason}); {fix}"
        ) from exc

    state = _extract_state_dict(loaded)
    if state is None or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(
            f"{what} for {backbone.name} holds no state dict of tensors "
            f"(raw, or under 'state_dict'/'model'); {fix}"
        )
    tensors = cast(dict[str, torch.Tensor], _normalise_keys(state))
    if head is not None:
        # torchvision files carry the 400-way Kinetics classifier; we replace it by our heads.
        tensors = {k: v for k, v in tensors.items() if not (k == head or k.startswith(head + "."))}

    expected = backbone.net.state_dict()
    # Checkpoints written before BatchNorm counted its batches lack these counters; BatchNorm
    # itself treats them as optional, so fill them rather than report them.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in tensors:
            tensors[key] = value.clone()
    missing = sorted(k for k in expected if k not in tensors)
    unexpected = sorted(k for k in tensors if k not in expected)
    mismatched = [
        f"{k} (file {list(tensors[k].shape)} vs model {list(v.shape)})"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys (e.g. {_examples(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys (e.g. {_examples(unexpected)})")
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches (e.g. {_examples(mismatched, 2)})")
        raise WeightsUnavailableError(
            f"{what} does not match backbone {backbone.name}: {'; '.join(problems)}; "
            f"expected a state dict of {backbone.name} (with or without its classifier head, "
            f"optionally under 'backbone.'); {fix}"
        )
    try:
        backbone.net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # dtype or other surprises the key check did not catch
        raise WeightsUnavailableError(
            f"{what} does not load into backbone {backbone.name}: {_one_line(exc)[:300]}; {fix}"
        ) from exc


# torch.hub's convention: "<name>-<sha256 prefix>.<ext>".
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


class _DownloadFailed(Exception):
    """Internal: why a download failed, in a few words."""


def _download(url: str, dest: Path, stall_timeout: float) -> None:
    """Download ``url`` to ``dest`` (atomically, hash-checked like torch.hub), or raise
    _DownloadFailed. Never hangs: the transfer runs in a daemon thread and is abandoned after
    ``stall_timeout`` seconds without progress, which also covers a DNS lookup that never
    returns (socket timeouts do not bound getaddrinfo)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.partial")
    sha256 = hashlib.sha256()
    progress = {"last": time.monotonic()}
    abandoned = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with urllib.request.urlopen(url, timeout=stall_timeout) as response:
                progress["last"] = time.monotonic()
                with open(tmp, "wb") as out:
                    while not abandoned.is_set():
                        chunk = response.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
                        sha256.update(chunk)
                        progress["last"] = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller, never printed here
            errors.append(exc)
        finally:
            # An abandoned transfer may wake up long after the caller cleaned up; leave nothing.
            if abandoned.is_set():
                tmp.unlink(missing_ok=True)

    thread = threading.Thread(target=worker, name="mvfoul-weights-download", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
            if thread.is_alive() and time.monotonic() - progress["last"] > stall_timeout:
                abandoned.set()
                raise _DownloadFailed(f"no response for {stall_timeout:g} s (no network?)")
        if errors:
            exc = errors[0]
            reason = getattr(exc, "reason", None) or exc
            raise _DownloadFailed(f"{type(exc).__name__}: {_one_line(reason)}")
        if abandoned.is_set():  # pragma: no cover - only reachable through the raise above
            raise _DownloadFailed("download abandoned")
        match = _HASH_IN_NAME.search(dest.name)
        expected = match.group(1) if match else ""
        digest = sha256.hexdigest()
        if expected and not digest.startswith(expected):
            raise _DownloadFailed(
                f"downloaded file is corrupt (sha256 {digest[:8]}..., expected {expected}...)"
            )
        os.replace(tmp, dest)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # best effort: a partial file never lies at the final path anyway
            pass


def hub_weights_path(name: str) -> Path:
    """Where torchvision's cache keeps the Kinetics-400 weights of backbone ``name``."""
    weights = _RECIPES[name].weights
    if weights is None:
        raise WeightsUnavailableError(
            f"backbone {name} has no pretrained weights; set model.pretrained=false"
        )
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _load_pretrained(backbone: Backbone, recipe: _Recipe) -> None:
    path = hub_weights_path(backbone.name)
    url = recipe.weights.url  # type: ignore[union-attr]  # hub_weights_path checked it
    fix = (
        f"download it on a machine with internet and put it at {path}, "
        "or set model.weights_path=/path/to/file.pth, or set model.pretrained=false"
    )
    if not path.is_file():
        log.info("downloading %s weights from %s to %s", backbone.name, url, path)
        try:
            _download(url, path, DOWNLOAD_STALL_TIMEOUT_S)
        except (_DownloadFailed, OSError) as exc:
            raise WeightsUnavailableError(
                f"cannot get Kinetics-400 weights for {backbone.name} from {url}: "
                f"{_one_line(exc)}; {fix}"
            ) from None
    _load_state_file(
        backbone,
        path,
        recipe.head,
        what=f"cached Kinetics-400 weights {path}",
        fix=f"delete the file to download it again, or {fix}",
    )


def build_backbone(
    name: str, pretrained: bool = False, weights_path: str | None = None
) -> Backbone:
    """Build the backbone registered as ``name``.

    ``weights_path`` (a local state dict) wins over ``pretrained``; ``pretrained`` loads the
    Kinetics-400 weights from torchvision's cache, downloading them if needed. Raises
    :class:`~mvfoul.errors.ConfigError` for an unknown name and
    :class:`~mvfoul.errors.WeightsUnavailableError` when weights cannot be had.
    """
    if name not in BACKBONES:
        raise ConfigError(
            f"model.backbone={name!r} is not a backbone; choose one of: {', '.join(BACKBONES)}"
        )
    spec, recipe = BACKBONES[name], _RECIPES[name]
    net = recipe.build()
    if recipe.head is not None:
        setattr(net, recipe.head, nn.Identity())
    backbone = Backbone(spec, net, recipe.blocks)

    if weights_path is not None:
        path = Path(weights_path).expanduser()
        _load_state_file(
            backbone,
            path,
            recipe.head,
            what=f"weights file {path}",
            fix="set model.weights_path to a state dict of this backbone, or to null",
        )
    elif pretrained:
        if recipe.weights is None:
            raise WeightsUnavailableError(
                f"backbone {name} has no pretrained weights; set model.pretrained=false "
                "or model.weights_path=/path/to/file.pth"
            )
        _load_pretrained(backbone, recipe)
    return backbone
