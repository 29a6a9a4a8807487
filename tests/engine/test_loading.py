"""load_model: folders, single-file checkpoints, hub ids offline, refused pickles, unknown names."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import noise2art
from noise2art import ModelLoadError
from noise2art.engine import registry


def test_loads_diffusers_folder(tiny_sd_path):
    model = noise2art.load_model(tiny_sd_path, device="cpu")
    assert model.embedding_shape == (77, 32)
    assert model.scheduler_class == "PNDMScheduler" and model.resolve().scheduler is None  # the folder's own config
    assert model.dtype.is_floating_point and str(model.device) == "cpu"


def test_hub_id_offline_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        noise2art.load_model("stable-diffusion-v1-5/stable-diffusion-v1-5", device="cpu")
    message = str(info.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message and "could not fetch" in message
    assert "\n" not in message


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickled_checkpoints_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04")
    with pytest.raises(ModelLoadError, match="refusing"):
        noise2art.load_model(path, device="cpu")


def test_unknown_model_lists_embedded_names():
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'.*embedded"):
        noise2art.load_model("no-such-model", device="cpu")


def test_folder_without_model_index(tmp_path):
    with pytest.raises(ModelLoadError, match="model_index.json"):
        noise2art.load_model(tmp_path, device="cpu")


def test_missing_safetensors_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such checkpoint"):
        noise2art.load_model(tmp_path / "x.safetensors", device="cpu")


def test_registry_aliases():
    assert registry.canonical_name("embedded") == registry.DEFAULT_MODEL
    assert registry.canonical_name("default") == registry.DEFAULT_MODEL
    assert registry.canonical_name("stable-diffusion") is None


def test_unknown_device():
    with pytest.raises(ValueError, match="^device: "):
        noise2art.load_model("embedded", device="tpu")


# --- single-file checkpoints (original LDM/CompVis key layout) ---------------------------------

_LDM_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_LDM_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _ldm_unet_keys(state: dict, layers_per_block: int) -> dict:
    """diffusers UNet key -> `model.diffusion_model.*` key of the original SD UNet.

    The original numbers its blocks flat: `input_blocks.0` is conv_in, then per level
    `layers_per_block` (resnet [+ attention]) blocks and one downsampler; the decoder side has
    `layers_per_block + 1` blocks per level, the upsampler sitting after the level's last one.
    """
    per = layers_per_block + 1
    fixed = {"conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.",
             "time_embedding.linear_2.": "time_embed.2.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
    with_attention = {int(m[1]) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}

    def resnet(rest: str) -> str:
        part, tail = rest.split(".", 1)
        return f"{_LDM_RESNET[part]}.{tail}"

    def ldm(key: str) -> str:
        for old, new in fixed.items():
            if key.startswith(old):
                return new + key[len(old):]
        if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            return f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.0.{resnet(m[3])}"
        if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            return f"input_blocks.{1 + int(m[1]) * per + int(m[2])}.1.{m[3]}"
        if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            return f"input_blocks.{1 + int(m[1]) * per + layers_per_block}.0.op.{m[2]}"
        if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            return f"middle_block.{2 * int(m[1])}.{resnet(m[2])}"
        if m := re.fullmatch(r"mid_block\.attentions\.0\.(.*)", key):
            return f"middle_block.1.{m[1]}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            return f"output_blocks.{int(m[1]) * per + int(m[2])}.0.{resnet(m[3])}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            return f"output_blocks.{int(m[1]) * per + int(m[2])}.1.{m[3]}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            slot = 2 if int(m[1]) in with_attention else 1
            return f"output_blocks.{int(m[1]) * per + layers_per_block}.{slot}.conv.{m[2]}"
        raise KeyError(f"no LDM name for UNet key '{key}'")

    return {k: "model.diffusion_model." + ldm(k) for k in state}


def _ldm_vae_keys(state: dict, n_up_blocks: int) -> dict:
    """diffusers VAE key -> `first_stage_model.*` key; the original numbers decoder levels in reverse."""

    def ldm(key: str) -> str:
        key = key.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut.", "nin_shortcut.")
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            return f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            return f"decoder.up.{n_up_blocks - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            return f"decoder.up.{n_up_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
        if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
            return f"{m[1]}.mid.attn_1.{_LDM_VAE_ATTENTION[m[2]]}.{m[3]}"
        return key  # conv_in, conv_out, norm_out, quant_conv, post_quant_conv keep their names

    return {k: "first_stage_model." + ldm(k) for k in state}


def write_ldm_checkpoint(folder, path, corrupt: str | None = None, drop: str | None = None):
    """Write the diffusers pipeline in `folder` as ONE `.safetensors` file in the original SD layout.

    `corrupt`: an LDM key whose tensor is replaced by a different one; `drop`: an LDM key left out.
    """
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    out = {}
    unet = pipe.unet.state_dict()
    for key, name in _ldm_unet_keys(unet, pipe.unet.config.layers_per_block).items():
        out[name] = unet[key]
    vae = pipe.vae.state_dict()
    for key, name in _ldm_vae_keys(vae, len(pipe.vae.config.up_block_types)).items():
        tensor = vae[key]
        if ".mid.attn_1." in name and name.endswith("weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # the original attention projections are 1x1 convolutions
        out[name] = tensor
    text = pipe.text_encoder.state_dict()
    for key, tensor in text.items():
        # The original wraps HF's CLIPTextModel: cond_stage_model.transformer.text_model.<...>.
        out["cond_stage_model.transformer.text_model." + key.removeprefix("text_model.")] = tensor
    assert len(out) == len(unet) + len(vae) + len(text), "two diffusers keys mapped to one LDM key"
    if corrupt is not None:
        out[corrupt] = torch.flip(out[corrupt], dims=[0]) * 1.5
    if drop is not None:
        del out[drop]
    save_file({k: v.contiguous().clone() for k, v in out.items()}, str(path))
    return path


def _pixels(model, prompt="a red ball", seed=3):
    return np.asarray(model.generate(prompt, seeds=[seed], steps=4, guidance=5.0, height=32, width=32)[0]).astype(int)


def _params(module):
    return {k: v.detach().float() for k, v in module.state_dict().items()}


def test_single_file_checkpoint_matches_folder(tiny_sd_path, tiny_model, tmp_path):
    """An original-layout `.safetensors` + `config=` folder loads to the same weights and pixels
    as the diffusers folder it was written from (a mis-mapped tensor changes both)."""
    path = write_ldm_checkpoint(tiny_sd_path, tmp_path / "tiny.safetensors")
    model = noise2art.load_model(path, device="cpu", config=tiny_sd_path)
    for part in ("unet", "vae"):
        ours, ref = _params(getattr(model, part)), _params(getattr(tiny_model, part))
        assert ours.keys() == ref.keys()
        wrong = [k for k in ref if not torch.equal(ours[k], ref[k])]
        assert not wrong, f"{part}: {len(wrong)} tensors differ, e.g. {wrong[:3]}"
    ours, ref = _params(model.text_encoder.model), _params(tiny_model.text_encoder.model)
    assert not [k for k in ref if not torch.equal(ours[k], ref[k])]
    assert model.scheduler_class == tiny_model.scheduler_class
    assert np.array_equal(_pixels(model), _pixels(tiny_model))


def test_single_file_checkpoint_with_one_wrong_tensor_changes_pixels(tiny_sd_path, tiny_model, tmp_path):
    """Negative control for the test above: the comparison notices one wrong UNet tensor."""
    path = write_ldm_checkpoint(tiny_sd_path, tmp_path / "bad.safetensors",
                                corrupt="model.diffusion_model.output_blocks.1.1.proj_out.weight")
    model = noise2art.load_model(path, device="cpu", config=tiny_sd_path)
    assert np.abs(_pixels(model) - _pixels(tiny_model)).max() > 10


@pytest.mark.parametrize("drop", ["model.diffusion_model.out.2.weight",
                                  "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc1.weight"])
def test_single_file_checkpoint_missing_tensor_is_clear_error(tiny_sd_path, tmp_path, drop):
    """A checkpoint lacking a UNet or text-encoder tensor is refused with a one-line ModelLoadError
    that says weights are missing (not a library traceback, not a silently random weight)."""
    path = write_ldm_checkpoint(tiny_sd_path, tmp_path / "short.safetensors", drop=drop)
    with pytest.raises(ModelLoadError) as info:
        noise2art.load_model(path, device="cpu", config=tiny_sd_path)
    message = str(info.value)
    assert "short.safetensors" in message and "lacks" in message and "\n" not in message


@pytest.mark.parametrize("base, message", [("../world-64", "not an embedded model"),
                                           ("/etc", "not an embedded model")])
def test_a_model_folder_names_only_an_embedded_model_as_its_base(tmp_path, base, message):
    import json

    for part in ("unet", "scheduler"):
        (tmp_path / part).mkdir()
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "noise2art.json").write_text(json.dumps({"base": base}))
    with pytest.raises(ModelLoadError, match=message):
        noise2art.load_model(str(tmp_path), device="cpu")
