"""LAION aesthetic predictor: layout, preprocessing, loading rules, on a tiny random CLIP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from noise2art.errors import InvalidArgument, ModelLoadError
from noise2art.metrics import (
    CLIP_MEAN,
    CLIP_STD,
    LaionAestheticMLP,
    LaionAestheticScorer,
    MetricContext,
    clip_preprocess,
    get_metric,
    load_laion_aesthetic,
)
from noise2art.metrics.laion import LAION_MLP_FILENAME

PROJECTION_DIM = 16


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny random CLIP vision tower (saved like a hub folder) and a random MLP as safetensors."""
    root = tmp_path_factory.mktemp("laion")
    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=PROJECTION_DIM,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(root / "clip")
    head = LaionAestheticMLP(PROJECTION_DIM)
    save_file(head.state_dict(), str(root / "head.safetensors"))
    (root / "folder").mkdir()
    save_file(head.state_dict(), str(root / "folder" / LAION_MLP_FILENAME))
    return root


@pytest.fixture(scope="module")
def scorer(saved) -> LaionAestheticScorer:
    return load_laion_aesthetic(clip=saved / "clip", mlp=saved / "head.safetensors")


def images(batch: int = 2, height: int = 40, width: int = 56, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_mlp_keeps_the_original_layout():
    head = LaionAestheticMLP()
    assert sorted(head.state_dict()) == sorted(
        f"layers.{i}.{kind}" for i in (0, 2, 4, 6, 7) for kind in ("weight", "bias")
    )
    widths = [(m.in_features, m.out_features) for m in head.layers if isinstance(m, torch.nn.Linear)]
    assert widths == [(768, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    dropouts = [m.p for m in head.layers if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.2, 0.2, 0.1]
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.GELU)) for m in head.modules())
    assert head(torch.randn(3, 768)).shape == (3, 1)


def test_scores_shape_dtype_and_determinism(scorer):
    batch = images()
    scores = scorer(batch)
    assert scores.shape == (2,) and scores.dtype == torch.float32
    scorer.train()  # a parent in training mode must not switch dropout on
    assert not scorer.training and not scorer.mlp.training
    torch.testing.assert_close(scorer(batch), scores)
    assert not any(p.requires_grad for p in scorer.parameters())


def test_scores_follow_the_reference_pipeline(scorer):
    batch = images(height=48, width=48)
    pixels = F.interpolate(batch, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
    pixels = pixels.clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    embeds = scorer.clip(pixel_values=(pixels - mean) / std).image_embeds
    expected = scorer.mlp(embeds / embeds.norm(dim=-1, keepdim=True)).squeeze(-1)
    torch.testing.assert_close(scorer(batch), expected)


def test_gradient_reaches_the_images(scorer):
    batch = images(height=20, width=30).requires_grad_()
    scorer(batch).sum().backward()
    assert batch.grad is not None and torch.isfinite(batch.grad).all() and batch.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [(40, 56), (56, 40), (20, 24), (32, 32), (17, 100)])
def test_any_image_size_is_resized_and_cropped(scorer, size):
    assert clip_preprocess(images(1, *size), 32).shape == (1, 3, 32, 32)
    assert scorer(images(1, *size)).shape == (1,)


def test_preprocess_crops_the_centre_and_normalises():
    # Already at the target height: no resize, only the centre 8 columns of 12 kept.
    batch = images(1, 8, 12)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(clip_preprocess(batch, 8), (batch[..., 2:10] - mean) / std)


def test_mlp_from_a_folder_and_via_the_registry(saved, scorer):
    from_folder = load_laion_aesthetic(clip=saved / "clip", mlp=saved / "folder")
    batch = images()
    torch.testing.assert_close(from_folder(batch), scorer(batch))
    metric = get_metric("aesthetic", MetricContext(aesthetic=scorer))
    torch.testing.assert_close(metric(batch), scorer(batch))


@pytest.mark.parametrize("name", ["head.pth", "head.pt", "head.ckpt", "pytorch_model.bin"])
def test_pickle_checkpoints_are_refused(saved, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not to be unpickled")
    with pytest.raises(InvalidArgument, match="safetensors") as info:
        load_laion_aesthetic(clip=saved / "clip", mlp=path)
    assert info.value.name == "mlp"
    with pytest.raises(InvalidArgument, match="safetensors"):
        load_laion_aesthetic(clip=saved / "clip", mlp=f"someone/aesthetic/{name}")


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("mlp", ["nobody/no-such-aesthetic-head", "nobody/no-such-repo/head.safetensors"])
def test_hub_mlp_offline_is_a_one_line_load_error(saved, tmp_path, offline, mlp):
    with pytest.raises(ModelLoadError) as info:
        load_laion_aesthetic(clip=saved / "clip", mlp=mlp, cache_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "nobody/no-such" in message


def test_hub_clip_offline_is_a_one_line_load_error(saved, tmp_path, offline):
    with pytest.raises(ModelLoadError) as info:
        load_laion_aesthetic(clip="nobody/no-such-clip", mlp=saved / "head.safetensors", cache_dir=tmp_path)
    assert "\n" not in str(info.value) and "nobody/no-such-clip" in str(info.value)


def test_missing_local_files(saved, tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_laion_aesthetic(clip=saved / "clip", mlp=tmp_path / "missing.safetensors")
    with pytest.raises(ModelLoadError, match=LAION_MLP_FILENAME.replace("+", r"\+")):
        load_laion_aesthetic(clip=saved / "clip", mlp=tmp_path)


def test_head_for_another_clip_is_refused(saved, tmp_path):
    path = tmp_path / "l14.safetensors"
    save_file(LaionAestheticMLP(768).state_dict(), str(path))
    with pytest.raises(ModelLoadError, match="768-d"):
        load_laion_aesthetic(clip=saved / "clip", mlp=path)
    with pytest.raises(InvalidArgument, match="mlp"):
        clip = CLIPVisionModelWithProjection.from_pretrained(saved / "clip")
        LaionAestheticScorer(clip, LaionAestheticMLP(768))


def test_corrupt_safetensors_is_a_load_error(saved, tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelLoadError):
        load_laion_aesthetic(clip=saved / "clip", mlp=path)


def test_full_clip_checkpoint_loads_its_vision_tower(saved, tmp_path):
    """Hub CLIPs are full CLIPModel checkpoints (text + vision); the projection size
    lives at the top level of their config."""
    from transformers import CLIPConfig, CLIPModel

    tower = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4)
    config = CLIPConfig(
        text_config=tower, vision_config=dict(tower, image_size=32, patch_size=8), projection_dim=PROJECTION_DIM
    )
    full = CLIPModel(config).eval()
    full.save_pretrained(tmp_path / "full")
    scorer = load_laion_aesthetic(clip=tmp_path / "full", mlp=saved / "head.safetensors")
    batch = images(height=32, width=32)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        features = full.get_image_features(pixel_values=(batch - mean) / std)
    features = getattr(features, "pooler_output", features)
    torch.testing.assert_close(scorer.embed(batch), F.normalize(features, dim=-1))


def test_checkpoint_without_projection_is_refused(saved, tmp_path):
    from transformers import CLIPVisionModel

    CLIPVisionModel(CLIPVisionModelWithProjection.from_pretrained(saved / "clip").config).save_pretrained(
        tmp_path / "no-projection"
    )
    with pytest.raises(ModelLoadError, match="visual_projection"):
        load_laion_aesthetic(clip=tmp_path / "no-projection", mlp=saved / "head.safetensors")
