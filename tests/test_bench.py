import json

import pytest
from typer.testing import CliRunner

from svdtool.cli import app
from svdtool.runtime import GenerationSettings
from svdtool.runtime.benchmark import unet_flops


def test_bench_compares_folders_and_torch(tiny_ir_fp32, tiny_ir_fp16, image_file, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", str(tiny_ir_fp32), str(tiny_ir_fp16), "--torch", "tiny", "-i", str(image_file),
                                      "--repeat", "2", "--steps", "2", "--threads", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [r["backend"] for r in report["results"]] == ["openvino", "openvino", "torch"]
    for r in report["results"]:
        assert 0 < r["unet_step_s"]["min"] <= r["unet_step_s"]["median"] <= r["unet_step_s"]["max"]
        assert r["video_s"]["median"] > r["unet_step_s"]["median"] and r["first_video_s"] > 0 and r["peak_rss_added_gb"] >= 0
        assert 0 < r["unet_fraction_of_fp32_matmul_peak"] < 50
    assert report["results"][0]["threads"] == 2 and report["results"][0]["hint"] == "LATENCY"
    assert out.with_suffix(".png").stat().st_size > 1000


def test_unet_flops_scale_with_frames(tiny_ir_fp32):
    two = unet_flops(tiny_ir_fp32, GenerationSettings(num_frames=2, height=64, width=64))
    four = unet_flops(tiny_ir_fp32, GenerationSettings(num_frames=4, height=64, width=64))
    assert two > 1e6 and 1.9 < four / two < 2.3


@pytest.mark.parametrize("args,message", [(["--hint", "FAST"], "LATENCY or THROUGHPUT"), (["--repeat", "0"], "1 or more"),
                                          (["--threads", "1"], "SIGFPE"),
                                          (["--torch", "tiny", "--device", "cuda"], "no CUDA")])
def test_bench_bad_input(tiny_ir_fp32, args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    result = CliRunner().invoke(app, ["bench", str(tiny_ir_fp32), *args])
    assert result.exit_code == 2 and message in result.output
