"""The few-step student's distillation: trajectories, the DDIM algebra of its loss, resuming, export."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from noise2art.world.training import distill


def test_boundaries_are_teacher_step_counts_at_each_student_timestep():
    teacher = list(range(951, 0, -50))  # the model's 20 DDIM steps: 951, 901, ..., 1
    student = [751, 501, 251, 1]
    assert distill.boundaries(teacher, student) == [9, 14, 19, 20]
    with pytest.raises(ValueError, match="not a teacher timestep"):
        distill.boundaries(teacher, [667, 334, 1])


def test_student_timesteps_of_the_embedded_schedule_are_a_subset_of_the_teacher_steps():
    from noise2art.engine.registry import embedded_path

    config = json.loads((embedded_path("world-64") / "scheduler" / "scheduler_config.json").read_text())
    assert distill.student_timesteps(config, 4) == [751, 501, 251, 1]
    assert set(distill.student_timesteps(config, 4)) <= set(distill.student_timesteps(config, 20))


def test_clean_target_inverts_a_ddim_step():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    a_t, a_next = torch.tensor(0.2), torch.tensor(0.7)
    x = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
    x_next = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    torch.testing.assert_close(distill.clean_target(x, x_next, a_t, a_next), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(distill.ddim_clean(x, eps, a_t), x0, atol=1e-5, rtol=1e-5)


def test_trajectory_captions_are_deterministic_and_skip_the_held_out_prompts():
    from noise2art.world.evaluation import held_out_prompts

    cfg = distill.DistillConfig(empty_share=0.2)
    first = distill.trajectory_captions(cfg, 0, 300)
    assert first == distill.trajectory_captions(cfg, 0, 300)
    assert first[100:200] == distill.trajectory_captions(cfg, 100, 100)  # chunks draw the same captions
    assert 30 < first.count("") < 90
    assert not set(first) & set(held_out_prompts(200))
    assert len(set(first)) > 150


def _config(tmp_path, teacher, **kw):
    base = dict(run_dir=str(tmp_path / "fast"), teacher=str(teacher), n_trajectories=6, chunk=4, steps=2,
                batch_size=4, checkpoint_every=1, teacher_steps=8, student_steps=4)
    return distill.DistillConfig(**{**base, **kw})


def test_trajectories_hold_the_teachers_noise_and_final_latents(tmp_path, tiny_sd_path, tiny_model):
    cfg = _config(tmp_path, tiny_sd_path, teacher_guidance=3.0)
    folder = distill.make_trajectories(cfg, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["0000.safetensors", "0001.safetensors"]
    states, cond, timesteps, captions = distill.load_trajectories(folder)
    assert states.shape[:2] == (6, len(timesteps) + 1) and cond.shape[0] == 6
    seeds = [distill.SEED_BASE + j for j in range(6)]
    assert captions == distill.trajectory_captions(cfg, 0, 6)
    torch.testing.assert_close(states[:, 0], tiny_model.initial_noise(seeds).cpu())
    final = tiny_model.sample(tiny_model.encode(captions), seeds=seeds, pairing="zip", steps=8, guidance=3.0,
                              scheduler="ddim")
    torch.testing.assert_close(states[:, -1], final.cpu(), atol=1e-4, rtol=1e-4)
    # A second call finds every chunk written and leaves them as they are.
    mtime = (folder / "0000.safetensors").stat().st_mtime_ns
    distill.make_trajectories(cfg, progress=False)
    assert (folder / "0000.safetensors").stat().st_mtime_ns == mtime


def _losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_a_student_that_is_its_teacher_has_zero_loss_on_the_teachers_own_steps(tiny_model):
    # Every pair one of the teacher's own unguided DDIM steps (the last one included, with
    # its final alpha): the teacher reproduces each exactly, so the loss is 0 up to rounding.
    sched = distill.student_scheduler(tiny_model.scheduler_config)
    sched.set_timesteps(4)
    timesteps = [int(t) for t in sched.timesteps]
    cond = tiny_model.encode(["a red ball", "a lake"]).cond
    x = tiny_model.initial_noise([1, 2])
    alphas = distill.boundary_alphas(tiny_model.scheduler_config, timesteps)
    unet = tiny_model.unet
    with torch.no_grad():
        for k, t in enumerate(timesteps):
            tt = torch.full((2,), t)
            x_next = sched.step(unet(x, tt, encoder_hidden_states=cond).sample, t, x).prev_sample
            a_t, a_next = alphas[k].expand(2), alphas[k + 1].expand(2)
            own = distill.pair_loss(unet, x, x_next, tt, a_t, a_next, cond)
            # Under each other's prompts the same states are not the teacher's steps.
            swapped = distill.pair_loss(unet, x, x_next, tt, a_t, a_next, cond.flip(0))
            assert own < 1e-10 and swapped > 100 * own + 1e-12
            x = x_next


def test_training_resumes_from_its_checkpoint(tmp_path, tiny_sd_path):
    cfg = _config(tmp_path, tiny_sd_path, steps=2)
    distill.train(cfg, progress=False)
    cfg.steps = 3
    distill.train(cfg, progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "fast" / "log.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]
    assert distill.run_config(tmp_path / "fast").teacher == str(tiny_sd_path)


def test_a_resumed_run_records_its_new_length_and_focus(tmp_path, tiny_sd_path):
    cfg = _config(tmp_path, tiny_sd_path, steps=1)
    distill.train(cfg, progress=False)
    cfg.steps, cfg.focus = 2, {"modifier": 3.0}
    distill.train(cfg, progress=False)
    resumed = distill.run_config(tmp_path / "fast")
    assert (resumed.steps, resumed.focus) == (2, {"modifier": 3.0})
    out = distill.export_student(resumed, tmp_path / "student")
    notes = json.loads((out / "noise2art.json").read_text())["distillation"]
    assert (notes["steps"], notes["focus"]) == (2, {"modifier": 3.0})


def test_an_unknown_focus_family_is_refused_before_the_teacher_runs(tmp_path, tiny_sd_path):
    from noise2art.errors import InvalidArgument

    cfg = _config(tmp_path, tiny_sd_path, focus={"sparkle": 2.0})
    with pytest.raises(InvalidArgument, match="sparkle"):
        distill.train(cfg, progress=False)
    assert not (tmp_path / "fast" / "trajectories").exists()


def test_detail_is_the_finest_scale_and_weights_the_loss_on_it(tiny_model):
    smooth = torch.arange(4.0).repeat_interleave(2).view(1, 1, 1, 8).expand(1, 1, 8, 8)  # constant 2x2 blocks
    assert distill.detail(smooth).abs().max() == 0
    checker = (torch.arange(8).view(8, 1) + torch.arange(8)).remainder(2).float().view(1, 1, 8, 8)
    torch.testing.assert_close(distill.detail(checker), checker - 0.5)
    # The extra term is the step's error on that scale: zero for the teacher's own step,
    # and adding it raises the loss of a student that misses it.
    sched = distill.student_scheduler(tiny_model.scheduler_config)
    sched.set_timesteps(4)
    t = int(sched.timesteps[1])
    cond = tiny_model.encode(["a red ball", "a lake"]).cond
    x = tiny_model.initial_noise([1, 2])
    alphas = distill.boundary_alphas(tiny_model.scheduler_config, [int(v) for v in sched.timesteps])
    tt, a_t, a_next = torch.full((2,), t), alphas[1].expand(2), alphas[2].expand(2)
    unet = tiny_model.unet
    with torch.no_grad():
        x_next = sched.step(unet(x, tt, encoder_hidden_states=cond).sample, t, x).prev_sample
        assert distill.pair_loss(unet, x, x_next, tt, a_t, a_next, cond, detail_weight=4.0) < 1e-10
        plain = distill.pair_loss(unet, x, x_next, tt, a_t, a_next, cond.flip(0))
        weighted = distill.pair_loss(unet, x, x_next, tt, a_t, a_next, cond.flip(0), detail_weight=4.0)
    assert weighted > plain


def test_a_student_can_start_from_another_students_unet(tmp_path, tiny_sd_path, tiny_student_path):
    """`init_from` fine-tunes a trained student: training starts from its weights, not the teacher's."""
    from diffusers import UNet2DConditionModel

    from noise2art.world.training.checkpoint import load_checkpoint

    cfg = _config(tmp_path, tiny_sd_path, steps=1)
    cfg.init_from, cfg.detail_weight, cfg.lr = str(tiny_student_path), 2.0, 1e-12
    distill.train(cfg, progress=False)
    student = UNet2DConditionModel.from_pretrained(tiny_student_path, subfolder="unet", use_safetensors=True)
    trained = copy.deepcopy(student)
    load_checkpoint(tmp_path / "fast" / "checkpoint", {"unet": trained})
    for a, b in zip(student.parameters(), trained.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    notes = json.loads((distill.export_student(distill.run_config(tmp_path / "fast"), tmp_path / "out")
                        / "noise2art.json").read_text())["distillation"]
    assert (notes["init_from"], notes["detail_weight"]) == (str(tiny_student_path), 2.0)
