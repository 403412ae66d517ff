"""Tests for mvfoul.models: backbone registry and weights, view pooling, MultiViewNet."""

from __future__ import annotations

import io
import threading
import time
from email.message import Message
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config
from mvfoul.config import POOLINGS
from mvfoul.errors import ConfigError, WeightsUnavailableError
from mvfoul.labels import NUM_ACTION, NUM_OFFENCE_SEVERITY
from mvfoul.models import backbones as backbones_module
from mvfoul.models.backbones import BACKBONES, Backbone, build_backbone, hub_weights_path
from mvfoul.models.net import MultiViewNet, ViewPooling
from mvfoul.paths import CONF_DIR

# Inputs each backbone accepts; the big ones are slow on CPU at the only sizes they take.
FAST_INPUTS = {
    "tiny": (2, 32),
    "r3d_18": (2, 32),
    "r2plus1d_18": (2, 32),
    "mc3_18": (2, 32),
    "swin3d_t": (2, 32),
}
SLOW_INPUTS = {"mvit_base_16x4": (16, 224), "mvit_v2_s": (16, 224), "s3d": (13, 209)}


@pytest.fixture(autouse=True)
def _few_threads():
    # The test machine's cores are shared; more threads only add contention.
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch home, so torchvision's real cache is never read or written."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(
        torch.hub, "_hub_dir", None
    )  # a set_dir() elsewhere would win over TORCH_HOME
    return home


def _meta_backbone(name: str) -> Backbone:
    """The real module structure without allocating or initialising weights (instant)."""
    with torch.device("meta"):
        return build_backbone(name)


# --- registry and input constraints -----------------------------------------------------------


def test_every_backbone_has_a_forward_test():
    assert set(FAST_INPUTS) | set(SLOW_INPUTS) == set(BACKBONES)


def test_shipped_model_configs_name_registered_backbones_and_poolings():
    files = sorted((CONF_DIR / "model").glob("*.yaml"))
    if not files:
        pytest.skip(f"no model configs under {CONF_DIR / 'model'}")
    for path in files:
        cfg = compose_config("config", [f"model={path.stem}"]).model  # the file over its schema
        assert cfg.backbone in BACKBONES, path.name
        assert cfg.pooling in POOLINGS, path.name


def test_specs_take_their_facts_from_torchvisions_weights_registry():
    from torchvision.models import get_model_weights

    for name, spec in BACKBONES.items():
        assert spec.name == name
        if spec.torchvision_name is None:
            assert name == "tiny" and spec.weights is None
            continue
        weights = get_model_weights(spec.torchvision_name).KINETICS400_V1
        assert spec.weights is weights
        if name != "s3d":  # measured below torchvision's declared minimum
            assert spec.min_size == min(weights.meta["min_size"])
            assert spec.min_frames == weights.meta.get("min_temporal_size", 1)


def _run_forward(name: str, frames: int, size: int) -> None:
    backbone = build_backbone(name).eval()
    clips = torch.randn(2, 3, frames, size, size)
    with torch.no_grad():
        features = backbone(clips)
    assert features.shape == (2, backbone.feature_dim)
    assert torch.isfinite(features).all()
    # Two different clips must not collapse onto one feature vector.
    assert not torch.allclose(features[0], features[1])


@pytest.mark.parametrize("name", sorted(FAST_INPUTS))
def test_small_backbone_forward_gives_features(name):
    _run_forward(name, *FAST_INPUTS[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_INPUTS))
def test_large_backbone_forward_gives_features(name):
    _run_forward(name, *SLOW_INPUTS[name])


@pytest.mark.parametrize(
    "name, frames, size",
    [
        ("mvit_base_16x4", 16, 224),
        ("mvit_v2_s", 16, 224),
        ("s3d", 13, 209),
        ("s3d", 16, 224),
        ("s3d", 64, 320),
        ("r3d_18", 1, 1),
        ("r2plus1d_18", 16, 224),
        ("mc3_18", 2, 32),
        ("swin3d_t", 1, 1),
        ("tiny", 8, 64),
    ],
)
def test_input_problem_accepts_supported_inputs(name, frames, size):
    assert BACKBONES[name].input_problem(frames, size) is None


@pytest.mark.parametrize(
    "name, frames, size, expected, not_expected",
    [
        (
            "mvit_base_16x4",
            8,
            112,
            [
                "mvit_base_16x4",
                "16 frames",
                "224x224",
                "got 8 frames of 112",
                "dataset.frame_size=224",
                "start_frame=63",
                "end_frame=87",
                "fps=17",
            ],
            [],
        ),
        ("mvit_v2_s", 16, 112, ["dataset.frame_size=224"], ["window"]),
        # torchvision's MViT would run 15 frames (its patching rounds up) but the positions then
        # mean something else than in pretraining: only 16 is accepted.
        ("mvit_base_16x4", 15, 224, ["a window giving 16 frames"], ["frame_size"]),
        ("s3d", 12, 224, ["at least 13 frames", "got 12 frames"], ["frame_size"]),
        ("s3d", 16, 208, ["209", "dataset.frame_size>=209"], ["window"]),
        ("tiny", 0, 64, ["at least 1 frame"], []),
    ],
)
def test_input_problem_rejects_with_a_one_line_fix(name, frames, size, expected, not_expected):
    problem = BACKBONES[name].input_problem(frames, size)
    assert problem is not None and "\n" not in problem
    for text in expected:
        assert text in problem
    for text in not_expected:
        assert text not in problem


def test_backbone_forward_reports_the_input_problem_not_a_shape_error():
    backbone = _meta_backbone("mvit_base_16x4")
    with pytest.raises(ValueError, match="dataset.frame_size=224"):
        backbone(torch.empty(1, 3, 8, 112, 112, device="meta"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "builder, frames, size",
    [("s3d", 12, 224), ("s3d", 13, 208), ("mvit_v1_b", 8, 224), ("mvit_v2_s", 16, 112)],
)
def test_rejected_inputs_really_fail_in_torchvision(builder, frames, size):
    """The specs encode measurements: just below each limit, the bare network itself fails."""
    from torchvision.models import video

    net = getattr(video, builder)().eval()
    with torch.no_grad(), pytest.raises(RuntimeError):
        net(torch.randn(1, 3, frames, size, size))


def test_unknown_backbone_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"model\.backbone='resnet50'.*mvit_base_16x4.*tiny"):
        build_backbone("resnet50")


# --- blocks ---------------------------------------------------------------------------------------


def _last_modules(name: str, net: torch.nn.Module) -> list[torch.nn.Module]:
    """Modules that must sit in the top block (nearest the features)."""
    if name.startswith("mvit"):
        return [net.blocks[-1], net.norm]
    if name == "s3d":
        return [net.features[-1]]
    if name == "swin3d_t":
        return [net.features[-1], net.norm]
    if name == "tiny":
        return [net.stages[-1]]
    return [net.layer4]


def _first_modules(name: str, net: torch.nn.Module) -> list[torch.nn.Module]:
    if name.startswith("mvit"):
        return [net.conv_proj]
    if name == "s3d":
        return [net.features[0]]
    if name == "swin3d_t":
        return [net.patch_embed]
    if name == "tiny":
        return [net.stages[0]]
    return [net.stem]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_blocks_cover_every_parameter_exactly_once_in_order(name):
    backbone = _meta_backbone(name)
    keys_before = list(backbone.state_dict())
    blocks = backbone.blocks()

    assert len(blocks) >= 4
    block_params = [id(p) for block in blocks for p in block.parameters()]
    assert len(block_params) == len(set(block_params)), "a parameter is in two blocks"
    assert set(block_params) == {id(p) for p in backbone.parameters()}
    assert all(any(True for _ in block.parameters()) for block in blocks), (
        "a block with nothing to unfreeze"
    )

    first = {id(m) for m in blocks[0].modules()}
    last = {id(m) for m in blocks[-1].modules()}
    assert all(id(m) in first for m in _first_modules(name, backbone.net))
    assert all(id(m) in last for m in _last_modules(name, backbone.net))
    # The block views must not register anything on the backbone.
    assert list(backbone.state_dict()) == keys_before


# --- view pooling ---------------------------------------------------------------------------------

REAL_VIEWS = [4, 2, 1]  # real views per sample; the rest of V=4 is padding


def _pooling_batch(dim: int = 16):
    torch.manual_seed(0)
    features = torch.randn(len(REAL_VIEWS), 4, dim)
    mask = torch.tensor([[v < n for v in range(4)] for n in REAL_VIEWS])
    return features, mask


@pytest.mark.parametrize("kind", POOLINGS)
@pytest.mark.parametrize("garbage", ["huge", "nonfinite"])
def test_pooling_ignores_padded_views(kind, garbage):
    pooling = ViewPooling(kind, 16)
    features, mask = _pooling_batch()
    zeros = features.masked_fill(~mask.unsqueeze(-1), 0.0)
    junk = features.clone()
    if garbage == "huge":
        junk[~mask] = torch.randn_like(junk[~mask]) * 1e30
    else:
        junk[~mask] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e38]).repeat(4)[:16]

    with torch.no_grad():
        out_zeros, out_junk = pooling(zeros, mask), pooling(junk, mask)
        assert out_junk.shape == (3, 16)
        assert torch.equal(out_zeros, out_junk)
        for b, n in enumerate(REAL_VIEWS):
            alone = pooling(features[b : b + 1, :n], torch.ones(1, n, dtype=torch.bool))
            torch.testing.assert_close(out_junk[b : b + 1], alone)


def test_max_and_mean_pool_the_real_views():
    features, mask = _pooling_batch()
    max_out = ViewPooling("max", 16)(features, mask)
    mean_out = ViewPooling("mean", 16)(features, mask)
    for b, n in enumerate(REAL_VIEWS):
        torch.testing.assert_close(max_out[b], features[b, :n].amax(0))
        torch.testing.assert_close(mean_out[b], features[b, :n].mean(0))


def test_attention_pooling_learns_and_padding_does_not_poison_gradients():
    pooling = ViewPooling("attention", 16)
    features, mask = _pooling_batch()
    features[~mask] = float("nan")
    features.requires_grad_(True)
    pooling(features, mask).square().sum().backward()

    params = list(pooling.parameters())
    assert params, "attention pooling must have a learned scorer"
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert any(p.grad.abs().sum() > 0 for p in params)
    assert torch.equal(features.grad[~mask], torch.zeros_like(features.grad[~mask]))
    assert torch.isfinite(features.grad).all()


def test_attention_weights_depend_on_the_views():
    """Attention is not a disguised mean: its output differs from the plain average."""
    features, mask = _pooling_batch()
    attention = ViewPooling("attention", 16)(features, mask)
    mean = ViewPooling("mean", 16)(features, mask)
    assert not torch.allclose(attention[0], mean[0])
    torch.testing.assert_close(attention[2], features[2, 0])  # one real view: weight 1


@pytest.mark.parametrize("kind", POOLINGS)
def test_pooling_a_sample_without_views_gives_zeros_not_nan(kind):
    features = torch.randn(2, 3, 8)
    mask = torch.tensor([[True, False, False], [False, False, False]])
    out = ViewPooling(kind, 8)(features, mask)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros(8))


def test_unknown_pooling_lists_the_kinds():
    with pytest.raises(ValueError, match="max, mean, attention"):
        ViewPooling("median", 16)


# --- MultiViewNet -------------------------------------------------------------------------------


def _net_batch():
    torch.manual_seed(1)
    video = torch.randn(2, 3, 3, 8, 48, 48)  # B=2, V=3, 8 frames of 48 px
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return video, mask


@pytest.mark.parametrize("pooling", POOLINGS)
def test_multiview_net_output_shapes(pooling):
    net = MultiViewNet("tiny", pooling=pooling, shared_dim=32)
    video, mask = _net_batch()
    out = net(video, mask)
    assert set(out) == {"offence_severity", "action"}
    assert out["offence_severity"].shape == (2, NUM_OFFENCE_SEVERITY)
    assert out["action"].shape == (2, NUM_ACTION)


def test_backbone_runs_once_on_real_views_only():
    net = MultiViewNet("tiny", shared_dim=32)
    calls = []
    net.backbone.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    video, mask = _net_batch()
    net(video, mask)
    assert calls == [int(mask.sum())]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_padded_views_change_nothing(mode):
    torch.manual_seed(0)
    # dropout 0 so train mode is deterministic; train mode also checks padding stays out of
    # BatchNorm's batch statistics.
    net = MultiViewNet("tiny", pooling="attention", shared_dim=32, dropout_rate=0.0)
    net.train(mode == "train")
    video, mask = _net_batch()
    zeros = video.clone()
    zeros[~mask] = 0.0
    junk = video.clone()
    junk[~mask] = torch.randn_like(junk[~mask]) * 1e6
    junk[1, 2, 0, 0, 0, 0] = float("nan")
    with torch.no_grad():
        a, b = net(zeros, mask), net(junk, mask)
    for key in a:
        assert torch.equal(a[key], b[key])


def test_a_sample_scores_the_same_alone_or_padded_in_a_batch():
    net = MultiViewNet("tiny", pooling="mean", shared_dim=32).eval()
    video, mask = _net_batch()
    with torch.no_grad():
        batched = net(video, mask)
        alone = net(video[1:, :2], torch.ones(1, 2, dtype=torch.bool))
    for key in batched:
        torch.testing.assert_close(batched[key][1:], alone[key], rtol=1e-4, atol=1e-5)


def test_gradients_reach_backbone_and_heads():
    net = MultiViewNet("tiny", pooling="attention", shared_dim=32)
    video, mask = _net_batch()
    video[~mask] = float("nan")  # padding must not poison any gradient
    out = net(video, mask)
    loss = torch.nn.functional.cross_entropy(out["offence_severity"], torch.tensor([0, 3]))
    loss = loss + torch.nn.functional.cross_entropy(out["action"], torch.tensor([1, 7]))
    loss.backward()

    for group in (net.backbone_parameters(), net.head_parameters()):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in group)
    stem_conv = net.backbone.net.stages[0][0].weight
    assert stem_conv.grad.abs().sum() > 0
    for head in (net.offence_severity_head, net.action_head, net.pooling.scorer[0]):
        assert head.weight.grad.abs().sum() > 0


def test_head_and_backbone_parameters_partition_the_model():
    net = MultiViewNet("tiny", pooling="attention", shared_dim=32)
    head = {id(p) for p in net.head_parameters()}
    backbone = {id(p) for p in net.backbone_parameters()}
    assert head and backbone and not head & backbone
    assert head | backbone == {id(p) for p in net.parameters()}
    assert len(net.head_parameters()) == len(head)


def test_multiview_net_rejects_mismatched_inputs():
    net = MultiViewNet("tiny", shared_dim=32)
    video, mask = _net_batch()
    with pytest.raises(ValueError, match="view_mask"):
        net(video, mask[:, :2])
    with pytest.raises(ValueError, match="bool"):
        net(video, mask.long())


# --- pretrained weights ---------------------------------------------------------------------------


def _assert_actionable_download_error(message: str, name: str, home: Path) -> None:
    path = home / "hub" / "checkpoints" / Path(hub_weights_path(name)).name
    assert "\n" not in message
    assert name in message
    assert "https://download.pytorch.org/models/" in message
    assert str(path) in message
    assert "model.weights_path=" in message
    assert "model.pretrained=false" in message


def test_pretrained_without_network_fails_fast_with_the_fix(torch_home):
    """Really tries the download. Where the network is reachable the download succeeds, and the
    test checks the file landed in torchvision's cache instead."""
    start = time.monotonic()
    try:
        backbone = build_backbone("s3d", pretrained=True)
    except WeightsUnavailableError as exc:
        assert time.monotonic() - start < 30
        _assert_actionable_download_error(str(exc), "s3d", torch_home)
        assert not hub_weights_path("s3d").exists()
    else:
        assert hub_weights_path("s3d").is_file()
        assert isinstance(backbone, Backbone)


class _FakeResponse(io.BytesIO):
    """What torch.hub's urlopen returns, serving ``body`` ``chunk_s`` seconds per read."""

    def __init__(self, body: bytes, chunk_s: float = 0.0) -> None:
        super().__init__(body)
        self.chunk_s = chunk_s

    def info(self):
        return Message()  # headers, without Content-Length

    def read(self, size=-1):
        time.sleep(self.chunk_s)
        return super().read(min(size, 16384))  # above open()'s buffer: each read lands


class _ReleasableHang:
    """A stand-in for urlopen that hangs like a blackholed connection until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, request, timeout=None):
        self.release.wait(60)
        raise OSError("released by the test")


def test_stalled_download_is_abandoned_and_leaves_nothing_in_the_cache(torch_home, monkeypatch):
    hang = _ReleasableHang()
    monkeypatch.setattr(torch.hub, "urlopen", hang)
    monkeypatch.setattr(backbones_module, "DOWNLOAD_STALL_TIMEOUT_S", 0.3)
    checkpoints = torch_home / "hub" / "checkpoints"
    start = time.monotonic()
    try:
        with pytest.raises(WeightsUnavailableError) as info:
            build_backbone("s3d", pretrained=True)
        assert time.monotonic() - start < 5
        # The abandoned download still hangs, and its temporary file is already gone.
        assert not any(checkpoints.iterdir())
    finally:
        hang.release.set()
    assert "no response for 0.3 s" in str(info.value)
    _assert_actionable_download_error(str(info.value), "s3d", torch_home)


def test_a_slow_download_that_keeps_arriving_is_not_abandoned(torch_home, monkeypatch):
    from torchvision.models._api import Weights, WeightsEnum

    class SlowWeights(WeightsEnum):
        V1 = Weights(url="https://example.invalid/models/slow.pth", transforms=None, meta={})

    buffer = io.BytesIO()
    torch.save({"w": torch.arange(24000.0)}, buffer)  # ~96 kB: six reads, 0.1 s apart
    body = buffer.getvalue()
    monkeypatch.setattr(torch.hub, "urlopen", lambda request: _FakeResponse(body, chunk_s=0.1))
    monkeypatch.setattr(backbones_module, "DOWNLOAD_STALL_TIMEOUT_S", 0.4)
    start = time.monotonic()
    path = torch_home / "hub" / "checkpoints" / "slow.pth"
    state = backbones_module._hub_state_dict(SlowWeights.V1, path)
    assert time.monotonic() - start > 0.4  # longer than the stall limit, in all
    assert torch.equal(state["w"], torch.arange(24000.0))
    assert path.read_bytes() == body


def test_corrupt_download_is_not_cached(torch_home, monkeypatch):
    monkeypatch.setattr(
        torch.hub, "urlopen", lambda request: _FakeResponse(b"<html>proxy login</html>")
    )
    with pytest.raises(WeightsUnavailableError, match="invalid hash value") as info:
        build_backbone("s3d", pretrained=True)
    _assert_actionable_download_error(str(info.value), "s3d", torch_home)
    checkpoints = torch_home / "hub" / "checkpoints"
    assert not any(checkpoints.iterdir()), "nothing, not even a partial file, may stay in the cache"


def test_pretrained_loads_torchvisions_cached_file_without_network(torch_home, monkeypatch):
    from torchvision.models import video

    def no_network(request, timeout=None):
        raise AssertionError("a cached file must not be downloaded again")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    reference = video.s3d()  # a torchvision file: full model, Kinetics classifier included
    path = hub_weights_path("s3d")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)

    backbone = build_backbone("s3d", pretrained=True)
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("classifier.")}
    loaded = backbone.net.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_corrupt_cached_file_names_it_and_the_fix(torch_home):
    path = hub_weights_path("s3d")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    with pytest.raises(WeightsUnavailableError) as info:
        build_backbone("s3d", pretrained=True)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "delete the file" in message


def test_tiny_has_no_pretrained_weights():
    with pytest.raises(WeightsUnavailableError, match="model.pretrained=false"):
        build_backbone("tiny", pretrained=True)


# --- weights_path ---------------------------------------------------------------------------------


def _trained_tiny() -> MultiViewNet:
    """A tiny net whose weights and BatchNorm statistics differ from a fresh one's."""
    torch.manual_seed(3)
    net = MultiViewNet("tiny", shared_dim=32)
    with torch.no_grad():
        for p in net.backbone.parameters():
            p.add_(torch.randn_like(p))
        net(*_net_batch())  # train mode: updates running stats
    return net


@pytest.mark.parametrize(
    "layout", ["backbone", "net_only", "multiview_net", "lightning", "under_model"]
)
def test_weights_path_round_trip(tmp_path, layout):
    source = _trained_tiny()
    if layout == "backbone":
        state = source.backbone.state_dict()  # "net." keys
    elif layout == "net_only":
        state = source.backbone.net.state_dict()  # torchvision-style keys
    elif layout == "multiview_net":
        state = source.state_dict()  # "backbone.net." keys plus pooling and heads
    elif layout == "lightning":
        state = {
            "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()},
            "epoch": 4,
        }
    else:
        state = {"model": source.state_dict()}
    path = tmp_path / "weights.pth"
    torch.save(state, path)

    loaded = build_backbone("tiny", weights_path=str(path))
    expected = source.backbone.state_dict()
    got = loaded.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_weights_path_wins_over_pretrained(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(_trained_tiny().backbone.state_dict(), path)
    # tiny has no Kinetics weights, so this only works if weights_path is used instead.
    backbone = build_backbone("tiny", pretrained=True, weights_path=str(path))
    assert isinstance(backbone, Backbone)


class _Opaque:
    """An arbitrary pickled object: weights_only=True must refuse to unpickle it."""


def _bad_weights(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.pth"
    state = MultiViewNet("tiny", shared_dim=32).backbone.state_dict()
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    elif kind == "wrong_shape":
        state["net.stages.1.0.weight"] = torch.zeros(7, 16, 3, 3, 3)
        torch.save(state, path)
    elif kind == "other_keys":
        state["net.extra.weight"] = torch.zeros(3)
        del state["net.stages.3.1.bias"]
        torch.save(state, path)
    elif kind == "not_tensors":
        torch.save({"epoch": 3, "lr": 0.1}, path)
    elif kind == "pickled_object":
        torch.save({"weights": state, "opt": _Opaque()}, path)  # refused by weights_only
    return path


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("missing", "No such file"),
        ("garbage", "cannot be read"),
        ("wrong_shape", "stages.1.0.weight (file [7, 16, 3, 3, 3] vs model [32, 16, 3, 3, 3])"),
        (
            "other_keys",
            "1 missing keys (e.g. stages.3.1.bias); 1 unexpected keys (e.g. extra.weight)",
        ),
        ("not_tensors", "no state dict of tensors"),
        ("pickled_object", "cannot be read"),
    ],
)
def test_bad_weights_path_names_the_file_and_the_problem(tmp_path, kind, expected):
    path = _bad_weights(tmp_path, kind)
    with pytest.raises(WeightsUnavailableError) as info:
        build_backbone("tiny", weights_path=str(path))
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message
    assert "model.weights_path" in message


# --- each backbone's input statistics ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_backbone_carries_its_weights_input_statistics(name):
    from torchvision.models import get_model_weights

    from mvfoul.data.transforms import KINETICS_MEAN, KINETICS_STD

    spec = BACKBONES[name]
    if name == "tiny":
        assert (spec.mean, spec.std) == (KINETICS_MEAN, KINETICS_STD)  # no weights: the R3D values
        return
    preset = get_model_weights(spec.torchvision_name).DEFAULT.transforms()
    assert list(spec.mean) == list(preset.mean) and list(spec.std) == list(preset.std)


@pytest.mark.parametrize(
    ("model", "backbone"),
    [("mvit", "mvit_base_16x4"), ("swin3d", "swin3d_t"), ("resnet3d", "r3d_18"), ("tiny", "tiny")],
)
def test_the_data_pipeline_normalises_with_the_backbones_statistics(model, backbone):
    from conftest import compose_config
    from mvfoul.data.datamodule import MultiViewDataModule
    from mvfoul.rules import validate_config, with_schema

    cfg = with_schema(
        compose_config(
            "quick_test",
            [
                f"model={model}",
                "model.pretrained=false",
                "dataset.frame_size=224",
                "dataset.start_frame=63",
                "dataset.end_frame=87",
                "dataset.fps=17",
            ],
        )
    )
    resolved = validate_config(cfg)
    spec = BACKBONES[backbone]
    assert (resolved.mean, resolved.std) == (spec.mean, spec.std)
    cfg.dataset.mean, cfg.dataset.std = (
        list(resolved.mean),
        list(resolved.std),
    )  # as train() records them
    transform = MultiViewDataModule(cfg.dataset, resolved.frame_indices)._transform_config()
    grey = torch.full((16, 256, 256, 3), 128, dtype=torch.uint8)
    from mvfoul.data.transforms import build_clip_transform

    out = build_clip_transform(transform, train=False)(grey)
    for c in range(3):
        assert out[c].mean().item() == pytest.approx(
            (128 / 255 - spec.mean[c]) / spec.std[c], abs=1e-5
        )


def test_channels_last_gives_the_same_outputs_and_compile_keeps_the_checkpoint_keys():
    from conftest import compose_config
    from mvfoul.training.module import MultiViewFoulModule

    torch.manual_seed(0)
    plain = MultiViewNet("tiny").eval()
    fast = MultiViewNet("tiny", channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    conv = fast.backbone.net.stages[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last_3d)
    video = torch.randn(2, 2, 3, 4, 32, 32)
    mask = torch.tensor([[True, True], [True, False]])
    with torch.no_grad():
        for head, logits in plain(video, mask).items():
            torch.testing.assert_close(fast(video, mask)[head], logits, rtol=1e-4, atol=1e-5)

    config = OmegaConf.to_container(
        compose_config("quick_test", ["system.compile=true", "system.channels_last=true"]),
        resolve=True,
    )
    module = MultiViewFoulModule(config)
    assert (
        module.net.channels_last and module.net.backbone._compiled_call_impl is not None
    )  # compiled at the first call
    assert set(module.state_dict()) == set(
        MultiViewFoulModule(
            OmegaConf.to_container(compose_config("quick_test"), resolve=True)
        ).state_dict()
    )
