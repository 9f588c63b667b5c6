"""``fallwatch-calibrate``: an INT8 (or FP16/FP32) model from an ONNX pose model, checked against FP32.

On a Jetson (``--backend tensorrt``) it builds a TensorRT engine for this board at the configured
input size, INT8-calibrated on your frames, and writes the engine, its metadata and the calibration
cache. Elsewhere (``--backend onnxruntime``) it writes an INT8 ONNX model by ONNX Runtime's static
quantisation from the same frames. Either way it then runs the result and the FP32 model on
held-out frames and fails (exit status 1) when they disagree more than the bars allow.

A top_down (PoseResNet) or single_person_3d (BodyPose3DNet) model is calibrated and verified on person
crops instead of whole frames: the configured seed model (topdown.seed_spec) finds the people of each
calibration frame and they are cropped as the daemon crops them (with every other input a 3D model
takes); verification compares keypoints per crop (--min-keypoint-agreement within --keypoint-px, --min-oks).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

log = logging.getLogger("fallwatch.calibration")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fallwatch-calibrate",
        description=" ".join(__doc__.split("\n\n")[1:3]).replace("\n", " "),
        epilog="Examples: fallwatch-calibrate --images calib/ --int8   (on a Jetson: engine for the configured "
               "model); fallwatch-calibrate --backend onnxruntime --video a.mp4 --video b.mp4 --frames 100 "
               "--verify-images held_out/. Exit status: 0 built and verified, 1 build failed or verification "
               "under the bars, 2 bad configuration or usage.")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="configuration (as for fallwatch: default $FALLWATCH_CONFIG, /etc/fallwatch/config.yaml, "
                        "./config.yaml): model.spec, input size, resize mode, engine file, precision")
    p.add_argument("--model", metavar="ONNX", help="the FP32 ONNX model (default: the configured model)")
    p.add_argument("--backend", choices=("tensorrt", "onnxruntime"),
                   help="tensorrt: build an engine on this Jetson; onnxruntime: write an INT8 ONNX model "
                        "(default: engine.backend of the configuration)")
    p.add_argument("--precision", choices=("int8", "fp16", "fp32"),
                   help="engine precision (default: engine.precision; onnxruntime makes int8 only)")
    p.add_argument("--int8", dest="precision", action="store_const", const="int8", help="same as --precision int8")
    p.add_argument("--out", metavar="FILE",
                   help="where to write: default engine.engine_file or <state_dir>/engines/<model>_<H>x<W>_"
                        "<precision>.engine (tensorrt), <model>_int8.onnx beside the model (onnxruntime)")
    src = p.add_argument_group("calibration frames (may be combined and repeated)")
    src.add_argument("--images", metavar="DIR", action="append", default=[], type=Path,
                     help="a folder of .jpg/.png images, searched recursively")
    src.add_argument("--video", metavar="FILE", action="append", default=[], type=Path,
                     help="a video file, sampled evenly over its length (--frames per video)")
    src.add_argument("--camera", metavar="URI", action="append", default=[],
                     help="a live camera (csi://0 needs OpenCV with GStreamer, v4l2:///dev/video0, rtsp://...), "
                          "one frame every --camera-interval seconds")
    src.add_argument("--frames", type=int, default=100, metavar="N", help="frames per video or camera (default 100)")
    src.add_argument("--camera-interval", type=float, default=0.2, metavar="S",
                     help="seconds between camera frames (default 0.2)")
    src.add_argument("--min-frames", type=int, default=50, metavar="N",
                     help="fail with fewer usable calibration frames (person crops for top_down and "
                          "single_person_3d models) than this (default 50; 300+ recommended)")
    cal = p.add_argument_group("calibration and build")
    cal.add_argument("--calibrator", choices=("entropy", "minmax"),
                     help="entropy (TensorRT default, IInt8EntropyCalibrator2) or minmax (default: entropy for "
                          "tensorrt, minmax for onnxruntime)")
    cal.add_argument("--calib-batch", type=int, default=8, metavar="N",
                     help="frames per calibration batch (default 8; fixed-batch models use their batch)")
    cal.add_argument("--batch-size", type=int, default=1, metavar="N",
                     help="largest batch the engine runs at once (profile 1..N; several views of a frame, or the "
                          "crops of a frame for top_down and single_person_3d models: up to topdown.max_crops); "
                          "default 1")
    cal.add_argument("--cache", metavar="FILE", type=Path,
                     help="TensorRT calibration cache (default <engine>.cache); when present, calibration is skipped")
    cal.add_argument("--recalibrate", action="store_true", help="ignore an existing calibration cache")
    cal.add_argument("--dla-core", type=int, metavar="N", help="build for DLA core N, with GPU fallback")
    cal.add_argument("--workspace-mib", type=int, default=1024, metavar="MIB",
                     help="TensorRT builder workspace limit in MiB (default 1024)")
    cal.add_argument("--timing-cache", metavar="FILE", type=Path,
                     help="TensorRT timing cache, read and updated (default <engine folder>/timing.cache)")
    cal.add_argument("--no-equalize", action="store_true",
                     help="onnxruntime: skip the depthwise/pointwise equalisation before quantisation")
    cal.add_argument("--keep-float", metavar="REGEX", action="append",
                     help="INT8: layers/nodes whose name or output name matches stay out of INT8 (FP16 in TensorRT, "
                          "float in ONNX Runtime); repeatable; default: the refinement stages of mobilenet_thin "
                          "(see BENCHMARKS.md); --keep-float '' quantises everything")
    ver = p.add_argument_group("verification against the FP32 model")
    ver.add_argument("--verify-images", metavar="DIR", action="append", default=[], type=Path,
                     help="held-out images (without --verify-images or --verify-video, every 10th calibration "
                          "frame is held out instead)")
    ver.add_argument("--verify-video", metavar="FILE", action="append", default=[], type=Path,
                     help="a held-out video, --verify-frames frames sampled evenly (repeatable)")
    ver.add_argument("--verify-frames", type=int, default=20, metavar="N",
                     help="frames per --verify-video (default 20)")
    ver.add_argument("--min-people-agreement", type=float, default=0.95, metavar="F",
                     help="bottom_up models: fail under this fraction of people found by both (default 0.95)")
    ver.add_argument("--min-oks", type=float, default=0.9, metavar="F",
                     help="fail under this mean OKS of matched people (of FP32 and built skeletons per crop for "
                          "top_down and single_person_3d models) (default 0.9)")
    ver.add_argument("--match-oks", type=float, default=0.5, metavar="F",
                     help="two people match when their OKS is at least this (default 0.5)")
    ver.add_argument("--min-keypoint-agreement", type=float, default=0.9, metavar="F",
                     help="top_down and single_person_3d models: fail under this fraction of the FP32 model's "
                          "keypoints found within --keypoint-px crop pixels (default 0.9)")
    ver.add_argument("--keypoint-px", type=float, default=8.0, metavar="PX",
                     help="top_down and single_person_3d models: a keypoint agrees within this many crop input "
                          "pixels (default 8, two heatmap cells of a 256x192 crop)")
    ver.add_argument("--no-verify", action="store_true", help="skip verification (not recommended)")
    ver.add_argument("--report", metavar="FILE.json", type=Path, help="also write the verification report here")
    p.add_argument("--selftest", action="store_true",
                   help="on a Jetson: check TensorRT, pycuda and the GPU with a tiny network (FP32 build and run "
                        "compared with NumPy, INT8 calibration, a failing calibration and a damaged cache that must "
                        "stop the build), then say what could not be checked here; nothing else is done")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override log_level")
    return p


def _config(args: argparse.Namespace):
    from edge.commands import load_config_for

    return load_config_for(args)


def _usage(message: str) -> int:
    print("fallwatch-calibrate: %s" % message, file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    from calibration.crops import CROP_FAMILIES, collect_for
    from calibration.data import HOLDOUT_EVERY, Sources, check_count
    from edge.inference.model import low_light
    from edge.inference.model import model_path as configured_model
    from edge.inference.specs import load_spec

    config = _config(args)
    backend = args.backend or config.engine.backend
    precision = args.precision or ("int8" if backend == "onnxruntime" else config.engine.precision)
    if backend == "onnxruntime" and precision != "int8":
        return _usage("--backend onnxruntime makes INT8 models only (the FP32 ONNX model is the FP32 model)")
    for name in ("frames", "calib_batch", "batch_size", "workspace_mib", "verify_frames"):
        if getattr(args, name) < 1:
            return _usage("--%s must be at least 1" % name.replace("_", "-"))
    spec = load_spec(config.model.spec)
    crops = spec.family in CROP_FAMILIES  # calibrated and verified on person crops, not whole frames
    input_hw: Tuple[int, int] = (config.model.input_height, config.model.input_width)
    model = Path(args.model) if args.model else configured_model(config)
    if not model.is_file():
        return _usage("--model %s: no such file" % model)
    out = Path(args.out) if args.out else _default_out(config, backend, model, precision)
    sources = Sources(tuple(args.images), tuple(args.video), tuple(args.camera), args.frames, args.camera_interval)
    calibrator = args.calibrator or ("entropy" if backend == "tensorrt" else "minmax")
    out.parent.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    with tempfile.TemporaryDirectory(prefix=".fallwatch-calib-", dir=str(out.parent)) as scratch:
        calib = verify_set = None
        if precision == "int8" and not sources.empty():
            calib = collect_for(spec, sources, config, input_hw, Path(scratch), "calibration", progress,
                                low_light(config))
        if args.verify_images or args.verify_video:
            verify_set = collect_for(spec, Sources(images=tuple(args.verify_images), videos=tuple(args.verify_video),
                                                   frames=args.verify_frames), config, input_hw, Path(scratch),
                                     "verification", progress, low_light(config))
        elif calib is not None and not args.no_verify:
            calib, verify_set = calib.split_holdout(HOLDOUT_EVERY)
            log.info("holding out every %dth calibration %s for verification (%d); give --verify-images DIR for "
                     "truly unseen images", HOLDOUT_EVERY, "crop" if crops else "frame", len(verify_set))
        unit = "person crops" if crops else "frames"
        if calib is not None:
            check_count(len(calib), len(calib.skipped), args.min_frames, unit=unit)
            log.info("%d calibration %s from %s", len(calib), unit, _describe(sources))
        if backend == "tensorrt":
            _build_trt(args, config, model, out, input_hw, spec, precision, calibrator, calib, progress)
        else:
            if calib is None:
                return _usage("INT8 calibration needs frames: --images DIR, --video FILE or --camera URI")
            _build_ort(args, model, out, spec.input_tensor, spec.name, calibrator, calib, progress)
        print(str(out))
        if args.no_verify:
            log.warning("verification skipped (--no-verify)")
            return EXIT_OK
        if verify_set is None or len(verify_set) == 0:
            log.warning("not verified: there are no held-out frames (give --verify-images DIR to compare the "
                        "result with the FP32 model)")
            return EXIT_OK
        if crops:
            return _verify_crops(args, config, backend, model, out, spec, input_hw, verify_set, progress)
        return _verify(args, backend, model, out, spec, input_hw, verify_set, progress)


def _default_out(config, backend: str, model: Path, precision: str) -> Path:
    import dataclasses

    from edge.inference.engines.tensorrt import engine_path_for

    if backend == "onnxruntime":
        return model.with_name(model.stem + "_int8.onnx")
    return engine_path_for(dataclasses.replace(config, engine=dataclasses.replace(config.engine, precision=precision)),
                           model)


def _describe(sources) -> str:
    parts = ["%d image folder(s)" % len(sources.images)] if sources.images else []
    parts += ["%d video(s)" % len(sources.videos)] if sources.videos else []
    parts += ["%d camera(s)" % len(sources.cameras)] if sources.cameras else []
    return ", ".join(parts)


def _keep_float(args, spec_name: str) -> Tuple[str, ...]:
    from calibration.ort_int8 import KEEP_FLOAT_BY_SPEC

    keep = tuple(args.keep_float) if args.keep_float is not None else KEEP_FLOAT_BY_SPEC.get(spec_name, ())
    return tuple(k for k in keep if k)


def _build_trt(args, config, model: Path, out: Path, input_hw, spec, precision: str, calibrator: str, calib,
               progress: bool) -> None:
    from calibration.trt_build import BuildOptions, build_engine
    from edge.inference.engines.metadata import cache_path

    options = BuildOptions(precision=precision, calibrator=calibrator, max_batch=args.batch_size,
                           calibration_batch=args.calib_batch, workspace_mib=args.workspace_mib,
                           dla_core=args.dla_core, timing_cache=args.timing_cache or out.parent / "timing.cache",
                           recalibrate=args.recalibrate, verbose=args.verbose,
                           keep_float=_keep_float(args, spec.name))
    meta = build_engine(model, out, input_hw, spec.input_layout, options, calib, args.cache or cache_path(out),
                        progress, input_name=spec.input_tensor)
    log.info("built %s: %s, TensorRT %s on %s, batch %s, in %.0f s", out, meta.precision, meta.tensorrt_version,
             meta.device_name, "-".join(str(b) for b in meta.batch), meta.build_seconds)


def _build_ort(args, model: Path, out: Path, input_name: str, spec_name: str, calibrator: str, calib,
               progress: bool) -> None:
    from calibration.ort_int8 import OrtInt8Options, quantize
    from edge.inference.models import atomic_write, sha256_file

    options = OrtInt8Options(calibrator=calibrator, equalize=not args.no_equalize,
                             keep_float=_keep_float(args, spec_name))
    info = quantize(model, out, calib, input_name, options, batch_size=1, progress=progress)
    info.update({"model_file": model.name, "model_sha256": sha256_file(model), "int8_sha256": sha256_file(out)})
    atomic_write(out.with_name(out.name + ".json"), (json.dumps(info, indent=2) + "\n").encode("utf-8"))
    log.info("wrote %s in %.0f s (%s)", out, info["seconds"], info["format"])


def _verify(args, backend: str, model: Path, out: Path, spec, input_hw, verify_set, progress: bool) -> int:
    from calibration.progress import Progress
    from calibration.verify import compare
    from edge.inference.engines import create_engine
    from edge.inference.engines.onnxruntime import OnnxRuntimeEngine
    from edge.inference.models import atomic_write

    reference = OnnxRuntimeEngine(model)
    other = create_engine("tensorrt", model, engine_file=out, input_hw=input_hw) if backend == "tensorrt" \
        else OnnxRuntimeEngine(out)
    bar = Progress("verifying", len(verify_set)) if progress else None
    try:
        report = compare(reference.run, other.run, verify_set.batches(1), spec, input_hw, args.match_oks,
                         on_frame=bar.update if bar else None, groups=[_group(s) for s in verify_set.sources])
    finally:
        if bar is not None:
            bar.close()
        reference.close()
        other.close()
    print(report.summary())
    passed = report.passed(args.min_people_agreement, args.min_oks)
    if args.report:
        data = report.to_dict()
        data.update({"model": str(model), "built": str(out), "backend": backend, "passed": passed,
                     "min_people_agreement": args.min_people_agreement, "min_oks": args.min_oks})
        atomic_write(args.report, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    if not passed:
        print("fallwatch-calibrate: verification FAILED: people agreement %.1f%% (needs %.1f%%), mean OKS %.3f "
              "(needs %.3f). Calibrate on more frames from the cameras' own scenes, try the other --calibrator, "
              "or use FP16 (--precision fp16)." % (100 * report.people_agreement, 100 * args.min_people_agreement,
                                                   report.mean_oks, args.min_oks), file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def _verify_crops(args, config, backend: str, model: Path, out: Path, spec, input_hw, verify_set,
                  progress: bool) -> int:
    """:func:`_verify` for the crop families: keypoints on held-out person crops (calibration.verify_crops)."""
    from calibration.progress import Progress
    from calibration.verify_crops import compare_crops
    from edge.inference.engines import create_engine
    from edge.inference.engines.onnxruntime import OnnxRuntimeEngine
    from edge.inference.models import atomic_write

    reference = OnnxRuntimeEngine(model)
    other = create_engine("tensorrt", model, engine_file=out, input_hw=input_hw) if backend == "tensorrt" \
        else OnnxRuntimeEngine(out)
    name = spec.input_tensor

    def runner(engine):
        return lambda feed: engine.run(feed[name], {k: v for k, v in feed.items() if k != name})

    bar = Progress("verifying", len(verify_set)) if progress else None
    try:
        report = compare_crops(runner(reference), runner(other), verify_set.feeds(1, name), spec,
                               config.topdown.keypoint_threshold, args.keypoint_px,
                               on_crop=bar.update if bar else None,
                               groups=[_group(s.rsplit("@", 1)[0]) for s in verify_set.sources])
    finally:
        if bar is not None:
            bar.close()
        reference.close()
        other.close()
    print(report.summary())
    passed = report.passed(args.min_keypoint_agreement, args.min_oks)
    if args.report:
        data = report.to_dict()
        data.update({"model": str(model), "built": str(out), "backend": backend, "passed": passed,
                     "min_keypoint_agreement": args.min_keypoint_agreement, "min_oks": args.min_oks})
        atomic_write(args.report, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    if not passed:
        print("fallwatch-calibrate: verification FAILED: keypoint agreement %.1f%% within %g px (needs %.1f%%), "
              "mean OKS %.3f (needs %.3f). Calibrate on more frames from the cameras' own scenes, try the other "
              "--calibrator, keep layers in float (--keep-float), or use FP16 (--precision fp16)."
              % (100 * report.keypoint_agreement, args.keypoint_px, 100 * args.min_keypoint_agreement,
                 report.mean_oks, args.min_oks), file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def _group(source: str) -> str:
    """Verification frames are reported per video, and images together."""
    return source.rsplit("#", 1)[0] if "#" in source else "images"


def main(argv: Optional[List[str]] = None) -> int:
    from calibration.cache import CacheError
    from calibration.frames import FramesError
    from calibration.ort_int8 import QuantizeError
    from calibration.shapes import ShapeError
    from edge.inference.engines import EngineError
    from edge.inference.specs import SpecError

    args = build_parser().parse_args(argv)
    try:
        if args.selftest:
            from calibration.selftest import selftest

            logging.basicConfig(stream=sys.stderr, level=logging.INFO)
            return selftest(print)
        return run(args)
    except (FramesError, ShapeError) as exc:
        print("fallwatch-calibrate: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except (EngineError, CacheError, QuantizeError, SpecError) as exc:
        print("fallwatch-calibrate: %s" % exc, file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
