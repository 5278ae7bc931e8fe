"""Consistency distillation of a few-step student (svdtool.models.distill_mini) on the tiny preset: the teacher's ODE
step is SVD's own Euler step with the pipeline's guidance, the σ grid holds every σ the 4-step sampler visits, and a
run trains, resumes and leaves a UNet that loads strictly as `--unet`."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import EulerDiscreteScheduler
from typer.testing import CliRunner

from svdtool.models.distill_mini import app, guided_ode_step, karras_sigmas
from svdtool.models.samplers import CONSISTENCY_CONFIG, SVDConsistencyScheduler
from svdtool.models.unets import load_unet_weights


def test_the_grid_holds_every_sigma_the_sampler_visits():
    grid = karras_sigmas()
    assert len(grid) == CONSISTENCY_CONFIG["num_train_timesteps"] and torch.all(grid[1:] > grid[:-1])
    assert grid[0] == pytest.approx(CONSISTENCY_CONFIG["sigma_min"]) and grid[-1] == pytest.approx(CONSISTENCY_CONFIG["sigma_max"])
    scheduler = SVDConsistencyScheduler(**CONSISTENCY_CONFIG)
    for steps in (1, 2, 4, 8):
        scheduler.set_timesteps(steps)
        for sigma in scheduler.sigmas:
            assert torch.isclose(grid, torch.as_tensor(float(sigma)), rtol=1e-5).any(), (steps, float(sigma))


def test_the_teachers_step_is_svds_guided_euler_step(tiny_torch):
    """One guided_ode_step against what diffusers' pipeline does for one step: scale the input, concatenate the image
    latents, run the UNet on the negative and positive halves, guide frame by frame, EulerDiscreteScheduler.step."""
    pipeline = tiny_torch
    unet = pipeline.unet
    frames, channels = 6, unet.config.out_channels
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, frames, channels, 8, 8, generator=generator)
    image_latents = torch.randn(2, channels, 8, 8, generator=generator)
    embeddings = torch.randn(2, 1, unet.config.cross_attention_dim, generator=generator)
    added_time_ids = torch.tensor([[6.0, 127.0, 0.02], [6.0, 40.0, 0.05]])
    guidance = torch.linspace(1.0, 3.0, frames)

    scheduler = EulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(10)
    index = 3
    sigma, sigma_next = scheduler.sigmas[index], scheduler.sigmas[index + 1]
    noisy = latents + sigma * torch.randn(latents.shape, generator=generator)

    with torch.no_grad():
        scheduler._step_index = index
        model_input = scheduler.scale_model_input(torch.cat([noisy, noisy]), scheduler.timesteps[index])
        condition = torch.cat([torch.zeros_like(image_latents), image_latents])[:, None].expand(-1, frames, -1, -1, -1)
        prediction = unet(torch.cat([model_input, condition], dim=2), scheduler.timesteps[index],
                          encoder_hidden_states=torch.cat([torch.zeros_like(embeddings), embeddings]),
                          added_time_ids=torch.cat([added_time_ids, added_time_ids])).sample
        negative, positive = prediction.chunk(2)
        guided = negative + guidance[None, :, None, None, None] * (positive - negative)
        scheduler._step_index = index
        expected = scheduler.step(guided, scheduler.timesteps[index], noisy).prev_sample

        stepped = guided_ode_step(unet, noisy, sigma.repeat(2), sigma_next.repeat(2),
                                  {"condition_latents": image_latents, "embeddings": embeddings, "added_time_ids": added_time_ids},
                                  guidance)
    assert torch.allclose(stepped, expected, atol=1e-4, rtol=1e-4), float((stepped - expected).abs().max())


def test_a_run_trains_resumes_and_leaves_a_unet_that_loads(tiny_torch, tmp_path):
    teacher = tmp_path / "teacher"
    tiny_torch.save_pretrained(teacher)
    out, state = tmp_path / "student", tmp_path / "state"
    arguments = ["--teacher", str(teacher), "--out", str(out), "--state", str(state), "--minutes", "0.01", "--batch", "2",
                 "--pool-clips", "4", "--workers", "0"]
    runner = CliRunner()
    steps = []
    for _ in range(2):
        result = runner.invoke(app, arguments)
        assert result.exit_code == 0, result.output
        record = json.loads((out / "training.json").read_text())
        steps.append(record["steps"]["distill"])
    assert 0 < steps[0] < steps[1] and record["sampler"] == "consistency"
    assert record["runs"][1].startswith(f"consistency distillation: {steps[0]:,} -> {steps[1]:,} steps")

    student = load_unet_weights(type(tiny_torch.unet).from_config(tiny_torch.unet.config), str(out / "unet"))
    teacher_weights, student_weights = tiny_torch.unet.state_dict(), student.state_dict()
    assert any(not torch.equal(teacher_weights[key].half(), student_weights[key]) for key in teacher_weights), "nothing trained"

    result = runner.invoke(app, ["--teacher", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 2 and "(no model_index.json)" in result.output


@pytest.mark.parametrize("trainer", ["distill_mini", "tiny_decoder", "train_mini"])
@pytest.mark.parametrize("damage, message", [(b"\x00 half a file", "state.pt cannot be read"),
                                             (None, "state.pt is not this trainer's")])
def test_a_damaged_or_foreign_state_is_refused_in_one_line(trainer, damage, message, tiny_torch, tmp_path):
    import importlib

    teacher, state = tmp_path / "teacher", tmp_path / "state"
    tiny_torch.save_pretrained(teacher)
    state.mkdir()
    if damage is None:  # a whole file, of another trainer
        torch.save({"something": "else"}, state / "state.pt")
    else:
        (state / "state.pt").write_bytes(damage)
    options = {"train_mini": ["--init"], "distill_mini": ["--teacher"], "tiny_decoder": ["--teacher"]}[trainer]
    module = importlib.import_module(f"svdtool.models.{trainer}")
    result = CliRunner().invoke(module.app, [*options, str(teacher), "--out", str(tmp_path / "out"), "--state", str(state)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.replace("│", " ").split()) and "Traceback" not in result.output  # rich's box
    assert not (tmp_path / "out").exists()
