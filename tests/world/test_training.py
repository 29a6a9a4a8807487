"""A few-step run of every training stage on tiny settings, then export and load the model folder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

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


def _adam_steps(run_dir) -> set[int]:
    """The AdamW step counts stored in a run's checkpoint (one per parameter)."""
    tensors = load_file(run_dir / "checkpoint" / "weights.safetensors")
    counts = {int(v.item()) for k, v in tensors.items() if k.startswith("optimizer.") and k.endswith(".step")}
    if not counts:  # a torch that keeps the step as a plain number stores it in state.json
        scalars = json.loads((run_dir / "checkpoint" / "state.json").read_text())["optimizer"]["scalars"]
        counts = {int(v) for k, v in scalars.items() if k.endswith(".step")}
    return counts


def test_training_resumes_where_it_stopped(tiny_runs, tmp_path, capsys):
    """A longer run in a folder with a checkpoint continues from the saved step: it takes only
    the missing steps, from the saved weights and optimizer state, and its log carries on."""
    import dataclasses
    import shutil

    shutil.copytree(tiny_runs["root"] / "unet", tmp_path / "unet")
    cfg = dataclasses.replace(tiny_runs["un_cfg"], run_dir=str(tmp_path / "unet"), steps=3)
    run = tmp_path / "unet"
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 2
    capsys.readouterr()

    unet.train(cfg, progress=False)

    assert "at step 2" in capsys.readouterr().err
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 3
    # Logged steps: 0 and 1 (the last of 2) from the first run, then 2 (the last of 3) only;
    # a restart would log step 0 again.
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]
    # The optimizer state was restored and took exactly one more step: a run that loaded the
    # state but restarted the loop at 0 would count 5.
    assert _adam_steps(run) == {3}


def test_exported_folder_loads_and_generates(tiny_runs, tmp_path):
    import noise2art

    folder = export_model(tmp_path / "model", tiny_runs["unet"], tiny_runs["vae"], tiny_runs["scale"],
                          tiny_runs["clip"], tiny_runs["head"], tiny_runs["classifier"], {"note": "smoke"})
    model = noise2art.load_model(folder, device="cpu")
    assert model.embedding_shape == (32, 384)
    assert model.vae_scale_factor == 4 and model.native_size == 32
    assert set(model.companions.loaded()) >= {"world_clip", "aesthetic", "attributes"}
    images = model.render("a red ball", seeds=[0, 1], steps=2)
    assert images.shape == (2, 3, 32, 32)
    assert model.aesthetic(images).shape == (2,)
    assert model.image_text(images, "a red ball").shape == (2,)
    preds = model.companions.attributes.predict(images)
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
