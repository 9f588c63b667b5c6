"""``fallwatch-calibrate --backend onnxruntime`` end to end with the real model on real frames:
calibration frames from the shared videos, an INT8 model, verification on held-out real images.
(The 300+-frame run with the figures is in BENCHMARKS.md; this one is kept affordable for CI.)"""
from __future__ import annotations

import json
import shutil
from collections import Counter

import onnx
import pytest

from calibration.cli import main

from conftest import shared_data

VIDEOS = ("subject1/Fall/13.mp4", "subject1/Fall/15.mp4", "subject1/ADL/16.mp4", "subject2/Fall/12.mp4",
          "subject2/Fall/14.mp4", "subject2/ADL/23.mp4")
HELD_OUT = ("apollo11_crew.jpg", "astronaut.png", "coco/COCO_val2014_000000000192.jpg",
            "coco/COCO_val2014_000000000241.jpg", "coco/COCO_val2014_000000000536.jpg",
            "coco/COCO_val2014_000000000544.jpg", "coco/COCO_val2014_000000000589.jpg",
            "coco/COCO_val2014_000000000415.jpg")


def _config(tmp_path, model_onnx):
    config = tmp_path / "config.yaml"
    config.write_text("model: {onnx: %s}\n" % model_onnx)
    return config


def test_int8_model_from_60_real_frames_sees_people_as_fp32_does(model_onnx, tmp_path, capsys):
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    for name in HELD_OUT:
        shutil.copy(str(shared_data("images", *name.split("/"))), str(held_out / name.replace("/", "_")))
    videos = [a for v in VIDEOS for a in ("--video", str(shared_data("gmdcsa24", *v.split("/"))))]
    out = tmp_path / "model_int8.onnx"
    code = main(["--config", str(_config(tmp_path, model_onnx)), "--backend", "onnxruntime", *videos,
                 "--frames", "10", "--verify-images", str(held_out), "--out", str(out), "--report",
                 str(tmp_path / "report.json"), "--min-people-agreement", "0.9", "--min-oks", "0.85",
                 "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.splitlines()[0] == str(out)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["frames"] == len(HELD_OUT) and report["people_fp32"] >= 12
    assert report["people_agreement"] >= 0.9 and report["mean_oks"] >= 0.85 and report["passed"]
    assert 0 < report["outputs"]["Openpose/concat_stage7"]["max_abs_error"]
    info = json.loads((tmp_path / "model_int8.onnx.json").read_text())
    assert info["calibration_frames"] == 60 and info["equalized_pairs"] > 0 and info["calibrator"] == "minmax"
    graph = onnx.load(str(out)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] >= 10 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert any("Conv2d_9_" in name for name in quantized)  # the later backbone runs INT8
    assert not any(name.startswith("Openpose/") or "Conv2d_1_" in name for name in quantized)  # the rest float
    assert info["kept_float_nodes"] > 100
    assert "people agreement" in captured.out


def test_too_few_frames_is_a_clear_usage_error(model_onnx, tmp_path, capsys):
    video = shared_data("gmdcsa24", "subject1", "ADL", "10.mp4")
    code = main(["--config", str(_config(tmp_path, model_onnx)), "--backend", "onnxruntime", "--video", str(video),
                 "--frames", "20", "--no-progress", "--out", str(tmp_path / "x.onnx")])
    assert code == 2
    err = capsys.readouterr().err
    assert "only 18 usable calibration frames" in err and "at least 50" in err  # 2 of 20 held out
    assert not (tmp_path / "x.onnx").exists()


def test_usage_errors(model_onnx, tmp_path, capsys):
    config = str(_config(tmp_path, model_onnx))
    assert main(["--config", config, "--backend", "onnxruntime", "--precision", "fp16"]) == 2
    assert "INT8 models only" in capsys.readouterr().err
    assert main(["--config", config, "--backend", "onnxruntime", "--no-progress"]) == 2
    assert "needs frames" in capsys.readouterr().err
    assert main(["--config", config, "--model", str(tmp_path / "nope.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--selftest" in capsys.readouterr().out
