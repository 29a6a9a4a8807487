"""A few-step run of every training stage on tiny settings, then export and load the model folder."""

from __future__ import annotations

import json

import pytest
import torch

from noise2art.world.training import autoencoder, companions, unet
from noise2art.world.training.checkpoint import load_checkpoint, save_checkpoint
from noise2art.world.training.export import export_model


def test_checkpoint_roundtrip_restores_weights_and_optimizer(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "ck", {"net": net}, opt, step=7, extra={"a": 1})
    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(net2.parameters(), lr=0.5)
    meta = load_checkpoint(tmp_path / "ck", {"net": net2}, opt2)
    assert meta["step"] == 7 and meta["extra"] == {"a": 1}
    torch.testing.assert_close(net2.weight, net.weight)
    assert opt2.param_groups[0]["lr"] == 0.1
    torch.testing.assert_close(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = str(root / "data")
    common = dict(data_dir=data, n_images=24, size=32)
    ae_cfg = autoencoder.AutoencoderConfig(run_dir=str(root / "ae"), channels=(16, 16, 32), steps=3, batch_size=4,
                                           crop_steps=2, checkpoint_every=2, **common)
    vae = autoencoder.train(ae_cfg, progress=False)
    un_cfg = unet.UNetConfig(run_dir=str(root / "unet"), autoencoder_run=ae_cfg.run_dir, channels=(32, 32, 32),
                             attention_head_dim=4, steps=2, batch_size=4, **common)
    ema, scale = unet.train(un_cfg, progress=False)
    clip_cfg = companions.ClipConfig(run_dir=str(root / "clip"), steps=2, batch_size=8, **common)
    clip = companions.train_clip(clip_cfg, progress=False)
    head = companions.train_aesthetic(companions.AestheticConfig(run_dir=str(root / "aes"), steps=2, **common),
                                      clip, progress=False)
    attr_cfg = companions.AttributesConfig(run_dir=str(root / "attr"), steps=2, batch_size=8, val_images=8, **common)
    classifier, accuracy = companions.train_attributes(attr_cfg, progress=False)
    return dict(root=root, vae=vae, unet=ema, scale=scale, clip=clip, head=head, classifier=classifier,
                accuracy=accuracy, un_cfg=un_cfg)


def test_stages_log_and_checkpoint(tiny_runs):
    root = tiny_runs["root"]
    for run in ("ae", "unet", "clip", "aes", "attr"):
        assert (root / run / "checkpoint" / "weights.safetensors").is_file()
        assert (root / run / "log.jsonl").read_text().strip()
    assert set(tiny_runs["accuracy"]) >= {"scene", "color", "time"}
    assert tiny_runs["scale"] > 0


def test_training_resumes_where_it_stopped(tiny_runs):
    cfg = tiny_runs["un_cfg"]
    state = json.loads((tiny_runs["root"] / "unet" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2
    cfg.steps = 3
    unet.train(cfg, progress=False)
    state = json.loads((tiny_runs["root"] / "unet" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3
    lines = (tiny_runs["root"] / "unet" / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] in (0, 2)  # logs every 25 steps: step 0 then nothing new past step 2


def test_exported_folder_loads_and_generates(tiny_runs, tmp_path):
    import noise2art

    folder = export_model(tmp_path / "model", tiny_runs["unet"], tiny_runs["vae"], tiny_runs["scale"],
                          tiny_runs["clip"], tiny_runs["head"], tiny_runs["classifier"], {"note": "smoke"})
    model = noise2art.load_model(folder, device="cpu")
    assert model.embedding_shape == (32, 384)
    assert model.vae_scale_factor == 4 and model.native_size == 32
    assert set(model.extras) >= {"world_clip", "aesthetic", "attributes"}
    images = model.render("a red ball", seeds=[0, 1], steps=2)
    assert images.shape == (2, 3, 32, 32)
    assert model.aesthetic(images).shape == (2,)
    assert model.image_text(images, "a red ball").shape == (2,)
    preds = model.extras["attributes"].predict(images)
    assert len(preds) == 2 and "color" in preds[0]


def test_caption_weights_draw_focused_families_more_often():
    captions = [["a red ball", "a landscape at night"], ["snowy peaks", "a cube"]]
    probs = unet.caption_weights(captions, {"color": 3, "snow": 2})
    # image-major: (0,0) names colour, (0,1) nothing, (1,0) snow, (1,1) nothing
    assert probs.shape == (4,) and probs.sum() == pytest.approx(1.0)
    assert probs[0] == pytest.approx(3 * probs[1]) and probs[2] == pytest.approx(2 * probs[3])
    assert probs[1] == pytest.approx(probs[3])
    with pytest.raises(ValueError, match="unknown attribute family"):
        unet.caption_weights(captions, {"colour": 2})
    with pytest.raises(ValueError, match="must be > 0"):
        unet.caption_weights(captions, {"color": 0})


def test_focused_training_runs_and_records_its_focus(tiny_runs, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(tiny_runs["un_cfg"], run_dir=str(tmp_path / "unet"), steps=1, focus={"color": 4.0})
    unet.train(cfg, progress=False)
    assert json.loads((tmp_path / "unet" / "config.json").read_text())["focus"] == {"color": 4.0}
    assert json.loads((tmp_path / "unet" / "checkpoint" / "state.json").read_text())["step"] == 1


def test_cli_focus_parses_and_rejects_bad_items():
    from noise2art.cli.world_model import _parse_focus
    from noise2art.errors import InvalidArgument

    assert _parse_focus("snow=3, color=2.5") == {"snow": 3.0, "color": 2.5}
    assert _parse_focus(None) == {}
    for bad in ("snow", "colour=2", "snow=x", "snow=-1"):
        with pytest.raises(InvalidArgument, match="focus"):
            _parse_focus(bad)
