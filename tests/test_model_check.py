"""`fallwatch model check` on a real photo: the network sees the three Apollo 11 crew members."""
from __future__ import annotations

import json

import cv2
import numpy as np

from conftest import MODELS_DIR, run_cli, shared_data

# Neck positions (frame pixels) read by eye off apollo11_crew.jpg (600x471): Armstrong, Collins, Aldrin.
APOLLO_NECKS = [(145, 245), (290, 160), (440, 250)]


def _config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("paths:\n  models_dir: %s\n" % MODELS_DIR)
    return path


def test_three_strongest_neck_peaks_are_the_three_crew_members(tmp_path, model_onnx):
    image = shared_data("images", "apollo11_crew.jpg")
    out = tmp_path / "maps.png"
    result = run_cli("--config", str(_config(tmp_path)), "model", "check", str(image), "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["heatmaps"] == [19, 46, 54] and report["pafs"] == [38, 46, 54]
    top3 = [(p["x"], p["y"]) for p in report["neck_peaks"][:3]]
    for nx, ny in APOLLO_NECKS:
        distances = [np.hypot(x - nx, y - ny) for x, y in top3]
        assert min(distances) < 35, "no strong neck peak near %s: %s" % ((nx, ny), report["neck_peaks"])
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] == 2 * 600 and picture.shape[0] > 471


def test_unreadable_image_is_a_clear_error(tmp_path, model_onnx):
    bogus = tmp_path / "not-an-image.jpg"
    bogus.write_bytes(b"hello")
    result = run_cli("--config", str(_config(tmp_path)), "model", "check", str(bogus))
    assert result.returncode != 0 and "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_missing_model_says_how_to_fetch_it(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("paths:\n  models_dir: %s\n" % (tmp_path / "empty"))
    image = shared_data("images", "astronaut.png")
    result = run_cli("--config", str(config), "model", "check", str(image))
    assert result.returncode == 1 and "fallwatch model fetch" in result.stderr and "Traceback" not in result.stderr


def test_detect_prints_the_three_crew_members_and_draws_them(tmp_path, model_onnx):
    image = shared_data("images", "apollo11_crew.jpg")
    out = tmp_path / "people.png"
    result = run_cli("--config", str(_config(tmp_path)), "detect", str(image), "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["people"]) == 3
    necks = [p["keypoints"]["neck"][:2] for p in report["people"]]
    for nx, ny in APOLLO_NECKS:
        assert min(np.hypot(x - nx, y - ny) for x, y in necks) < 35
    for person in report["people"]:
        assert {"nose", "neck", "r_shoulder", "l_shoulder", "r_eye", "l_eye"} <= set(person["keypoints"])
    drawn, original = cv2.imread(str(out)), cv2.imread(str(image))
    assert drawn.shape == original.shape and np.abs(drawn.astype(int) - original).sum() > 0
