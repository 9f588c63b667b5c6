"""The pose parser (edge/parse.py): agreement with the loop oracle, accuracy, hostile input,
and the real model on real images."""
from __future__ import annotations

import time
import tracemalloc
from typing import List, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.parse import ParseParams, find_peaks, parse_poses
from edge.inference.specs import KEYPOINT_INDEX, KEYPOINTS, Limb, load_spec

try:
    from tests.parse_oracle import oracle_parse
    from tests.scenes import random_person, random_scene, render
except ImportError:  # tests/ itself on sys.path
    from parse_oracle import oracle_parse
    from scenes import random_person, random_scene, render

# canonical map sizes of each spec at its usual input: (heatmap (H, W), PAF (H', W'))
SIZES = {
    "bodyposenet": ((36, 48), (144, 192)),  # 288x384 input, heatmaps stride 8, PAFs stride 2
    "openpose-mobilenet-thin": ((46, 54), (46, 54)),  # 368x432, stride 8
    "trt_pose": ((56, 56), (56, 56)),  # 224x224, stride 4
}


def same_people(a: Tuple[np.ndarray, np.ndarray], b: Tuple[np.ndarray, np.ndarray], heat_shape: Tuple[int, int],
                tol_cells: float = 1e-4) -> None:
    """Assert two parser outputs hold the same people (in any order) to ``tol_cells`` heatmap cells."""
    (ka, sa), (kb, sb) = a, b
    assert ka.dtype == np.float32 and sa.dtype == np.float32
    assert ka.shape == kb.shape, "%d people vs %d" % (ka.shape[0], kb.shape[0])
    h, w = heat_shape
    unmatched = list(range(kb.shape[0]))
    for i in range(ka.shape[0]):
        for j in unmatched:
            if (np.array_equal(ka[i, :, 2] > 0, kb[j, :, 2] > 0)
                    and np.abs((ka[i, :, 0] - kb[j, :, 0]) * w).max() <= tol_cells
                    and np.abs((ka[i, :, 1] - kb[j, :, 1]) * h).max() <= tol_cells
                    and np.allclose(ka[i, :, 2], kb[j, :, 2], atol=1e-5)
                    and abs(float(sa[i]) - float(sb[j])) <= 1e-4 * max(1.0, abs(float(sb[j])))):
                unmatched.remove(j)
                break
        else:
            raise AssertionError("person %d (score %.4f) has no match:\n%s\nin\n%s" % (i, sa[i], ka[i], kb))


def match_ground_truth(people: List[np.ndarray], keypoints: np.ndarray, heat_shape: Tuple[int, int]
                       ) -> List[Tuple[float, float]]:
    """For each generated person: (fraction of its visible parts found, mean error in cells) of the
    detected person that shares most of its parts (then the nearest); (0, inf) when none."""
    h, w = heat_shape
    out = []
    for gt in people:
        visible = gt[:, 2] > 0
        best = (0.0, float("inf"))
        for det in keypoints:
            both = visible & (det[:, 2] > 0)
            if not both.any():
                continue
            err = np.hypot((det[both, 0] - gt[both, 0]) * w, (det[both, 1] - gt[both, 1]) * h).mean()
            cand = (both.sum() / visible.sum(), float(err))
            if (cand[0], -cand[1]) > (best[0], -best[1]):
                best = cand
        out.append(best)
    return out


# --- agreement with the loop oracle on generated scenes ------------------------------------------

@st.composite
def scenes(draw):
    spec = draw(st.sampled_from(sorted(SIZES)))
    if draw(st.booleans()):
        heat_shape, paf_shape = SIZES[spec]
    else:
        heat_shape = (draw(st.integers(6, 40)), draw(st.integers(6, 40)))
        factor = draw(st.sampled_from([1, 2, 4]))
        paf_shape = (heat_shape[0] * factor, heat_shape[1] * factor)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    people = random_scene(rng, draw(st.integers(0, 6)), heat_shape,
                          min_height_cells=draw(st.floats(2.0, 30.0)),
                          occlude=draw(st.sampled_from([0.0, 0.1, 0.3])),
                          upright=draw(st.booleans()))
    heat, paf = render(people, spec, heat_shape, paf_shape, sigma=draw(st.floats(0.6, 1.6)),
                       paf_width=draw(st.floats(0.5, 1.5)), noise=draw(st.sampled_from([0.0, 0.02, 0.08])),
                       rng=rng)
    return spec, heat, paf


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes())
def test_matches_loop_oracle(scene):
    spec, heat, paf = scene
    same_people(parse_poses(heat, paf, spec), oracle_parse(heat, paf, spec), heat.shape[1:])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes(), st.sampled_from([
    ParseParams(blur_kernel=5, blur_sigma=3.0),
    ParseParams(blur_kernel=0, refine_peaks=False, peak_threshold=0.3),
    ParseParams(max_peaks_per_part=2, paf_samples=5, min_parts=2, min_person_score=0.1),
]))
def test_matches_loop_oracle_with_other_params(scene, params):
    spec, heat, paf = scene
    same_people(parse_poses(heat, paf, spec, params), oracle_parse(heat, paf, spec, params), heat.shape[1:])


def test_matches_loop_oracle_on_crowds():
    rng = np.random.default_rng(11)
    for spec, (heat_shape, paf_shape) in SIZES.items():
        people = random_scene(rng, 30, heat_shape, min_height_cells=5, max_height_cells=20)
        heat, paf = render(people, spec, heat_shape, paf_shape, noise=0.03, rng=rng)
        same_people(parse_poses(heat, paf, spec), oracle_parse(heat, paf, spec), heat_shape)


# --- accuracy on generated scenes ----------------------------------------------------------------

@pytest.mark.parametrize("spec", sorted(SIZES))
def test_a_crowd_of_fifteen_is_found(spec):
    """15 people of any size and orientation, overlapping allowed, noise 0.05: the parser reports
    at least 97% as many people as were generated (the 5x5 / sigma-3 smoothing of TAO, applied to
    the stride-8 maps of BodyPoseNet and mobilenet_thin, merged neighbours and found 78-89%; on
    trt_pose's stride-4 grid it did not), and no ghost crowds (at most 5% more)."""
    heat_shape, paf_shape = SIZES[spec]
    rng = np.random.default_rng(7)
    generated = found = 0
    for _ in range(20):
        people = random_scene(rng, 15, heat_shape)
        heat, paf = render(people, spec, heat_shape, paf_shape, noise=0.05, rng=rng)
        generated += len(people)
        found += len(parse_poses(heat, paf, spec)[0])
    assert 0.97 * generated <= found <= 1.05 * generated, "found %d people of %d" % (found, generated)


@pytest.mark.parametrize("spec", sorted(SIZES))
def test_people_standing_close_together_are_found_whole(spec):
    """15 people 5-12 cells tall, boxes only one cell apart, noise 0.05: >= 95% are found with
    >= 90% of their parts within half a cell (the old smoothing: 58-79%)."""
    heat_shape, paf_shape = SIZES[spec]
    rng = np.random.default_rng(7)
    results = []
    for _ in range(20):
        people = random_scene(rng, 15, heat_shape, min_height_cells=5, max_height_cells=12, separate=True,
                              gap_cells=1.0)
        heat, paf = render(people, spec, heat_shape, paf_shape, noise=0.05, rng=rng)
        results += match_ground_truth(people, parse_poses(heat, paf, spec)[0], heat_shape)
    whole = sum(frac >= 0.9 and err < 0.5 for frac, err in results)
    assert whole >= 0.95 * len(results), "found %d of %d whole" % (whole, len(results))


@pytest.mark.parametrize("spec", sorted(SIZES))
def test_finds_generated_people(spec):
    """Noise-free scenes of 1-6 people of any orientation, apart from each other: >= 95% found
    with >= 90% of their parts and a mean keypoint error under half a heatmap cell."""
    heat_shape, paf_shape = SIZES[spec]
    rng = np.random.default_rng(2024)
    results = []
    for _ in range(30):
        people = random_scene(rng, int(rng.integers(1, 7)), heat_shape, min_height_cells=8,
                              separate=True, gap_cells=3.0)
        heat, paf = render(people, spec, heat_shape, paf_shape)
        keypoints, scores = parse_poses(heat, paf, spec)
        assert len(keypoints) <= len(people)
        results += match_ground_truth(people, keypoints, heat_shape)
    found = [err for frac, err in results if frac >= 0.9 and err < 0.5]
    assert len(found) >= 0.95 * len(results), "found %d of %d" % (len(found), len(results))
    assert np.mean(found) < 0.05  # sub-cell refinement: ~0.004 cell here (exact Gaussians)


def test_sub_cell_accuracy_of_a_single_person():
    rng = np.random.default_rng(5)
    heat_shape, paf_shape = SIZES["bodyposenet"]
    person = random_person(rng, 0.6, (0.43, 0.35), 0.3, aspect=48 / 36)
    assert (person[:, 2] > 0).all()
    heat, paf = render([person], "bodyposenet", heat_shape, paf_shape, sigma=1.0)
    keypoints, scores = parse_poses(heat, paf, "bodyposenet")
    assert keypoints.shape == (1, 18, 3) and (keypoints[0, :, 2] > 0.6).all()
    err = np.hypot((keypoints[0, :, 0] - person[:, 0]) * 48, (keypoints[0, :, 1] - person[:, 1]) * 36)
    assert err.max() < 0.05, err
    assert scores[0] > 1.4  # (18 peaks of ~0.8-1 + 17 connections of ~1) / 18 parts


@pytest.mark.parametrize("angle", [0.0, np.pi / 2, -np.pi / 2, np.pi])
def test_lying_and_upside_down_people(angle):
    heat_shape, paf_shape = SIZES["openpose-mobilenet-thin"]
    person = random_person(np.random.default_rng(1), 0.55, (0.5, 0.5), angle, aspect=54 / 46)
    heat, paf = render([person], "openpose-mobilenet-thin", heat_shape, paf_shape)
    keypoints, _ = parse_poses(heat, paf, "openpose-mobilenet-thin")
    assert keypoints.shape == (1, 18, 3)
    assert match_ground_truth([person], keypoints, heat_shape)[0][1] < 0.1


def test_trt_pose_fragments_are_merged_into_one_person():
    """trt_pose's links start at the ankles and reach the neck last: fragments must merge."""
    heat_shape, paf_shape = SIZES["trt_pose"]
    rng = np.random.default_rng(3)
    for angle in (0.0, 1.3, 3.0):
        person = random_person(rng, 0.6, (0.5, 0.5), angle)
        heat, paf = render([person], "trt_pose", heat_shape, paf_shape)
        keypoints, _ = parse_poses(heat, paf, "trt_pose")
        assert keypoints.shape == (1, 18, 3)
        assert (keypoints[0, :, 2] > 0).all()


def test_paf_resolution_does_not_change_the_people():
    """PAFs at 1x, 2x and 4x the heatmap resolution are sampled in place, not resampled."""
    heat_shape = (36, 48)
    people = random_scene(np.random.default_rng(8), 5, heat_shape, min_height_cells=10, separate=True,
                          gap_cells=3.0)
    outputs = []
    for factor in (1, 2, 4):
        heat, paf = render(people, "bodyposenet", heat_shape, (36 * factor, 48 * factor))
        outputs.append(parse_poses(heat, paf, "bodyposenet"))
    assert len(outputs[0][0]) == len(people)
    for other in outputs[1:]:
        np.testing.assert_allclose(other[0], outputs[0][0], atol=1e-6)


def test_eyes_kept_when_the_nose_is_missed():
    """Eye-ear limbs never start a person, yet an eye-ear pair joins its person through the
    shoulder-ear limbs processed last (CMU order)."""
    heat_shape, paf_shape = SIZES["bodyposenet"]
    person = random_person(np.random.default_rng(2), 0.6, (0.5, 0.35), 0.0, aspect=48 / 36)
    person[KEYPOINT_INDEX["nose"], 2] = 0
    heat, paf = render([person], "bodyposenet", heat_shape, paf_shape)
    keypoints, _ = parse_poses(heat, paf, "bodyposenet")
    assert keypoints.shape == (1, 18, 3)
    present = {KEYPOINTS[i] for i in np.flatnonzero(keypoints[0, :, 2] > 0)}
    assert present == set(KEYPOINTS) - {"nose"}


def test_fills_gaps_limbs_never_start_a_person():
    heat_shape, paf_shape = SIZES["bodyposenet"]
    person = random_person(np.random.default_rng(2), 0.6, (0.5, 0.35), 0.0, aspect=48 / 36)
    only = [KEYPOINT_INDEX[n] for n in ("r_eye", "l_eye", "r_ear", "l_ear", "r_shoulder", "l_shoulder")]
    person[:, 2] = 0
    person[only, 2] = 1
    heat, paf = render([person], "bodyposenet", heat_shape, paf_shape)
    loose = ParseParams(min_parts=2, min_person_score=0.0)
    assert parse_poses(heat, paf, "bodyposenet", loose)[0].shape == (0, 18, 3)
    person[KEYPOINT_INDEX["nose"], 2] = 1  # nose-eye limbs start a person; the rest join it
    heat, paf = render([person], "bodyposenet", heat_shape, paf_shape)
    keypoints, _ = parse_poses(heat, paf, "bodyposenet", loose)
    assert keypoints.shape == (1, 18, 3) and (keypoints[0, :, 2] > 0).sum() == 7


# --- contract ------------------------------------------------------------------------------------

def test_output_contract_and_purity():
    heat_shape, paf_shape = SIZES["bodyposenet"]
    people = random_scene(np.random.default_rng(4), 4, heat_shape, min_height_cells=8, occlude=0.2)
    heat, paf = render(people, "bodyposenet", heat_shape, paf_shape, noise=0.03)
    heat_copy, paf_copy = heat.copy(), paf.copy()
    keypoints, scores = parse_poses(heat, paf, "bodyposenet")
    assert np.array_equal(heat, heat_copy) and np.array_equal(paf, paf_copy)
    assert keypoints.dtype == np.float32 and scores.dtype == np.float32
    assert keypoints.ndim == 3 and keypoints.shape[1:] == (18, 3) and scores.shape == (len(keypoints),)
    assert len(keypoints) > 0
    assert (np.diff(scores) <= 0).all()  # best first
    missing = keypoints[:, :, 2] == 0
    assert (keypoints[missing][:, :2] == 0).all()
    present = keypoints[~missing]
    assert ((present[:, :2] > 0) & (present[:, :2] < 1)).all()
    again = parse_poses(heat, paf, "bodyposenet")
    assert np.array_equal(again[0], keypoints) and np.array_equal(again[1], scores)
    # the background channel is ignored; the spec name and its limbs are the same topology
    same = parse_poses(heat[:18], paf, tuple(load_spec("bodyposenet").limbs))
    assert np.array_equal(same[0], keypoints) and np.array_equal(same[1], scores)


def test_params_are_data():
    params = ParseParams()
    assert (params.blur_kernel, params.blur_sigma, params.peak_threshold, params.paf_samples,
            params.paf_sample_threshold, params.paf_min_fraction, params.min_parts,
            params.min_person_score) == (3, 0.6, 0.1, 10, 0.05, 0.8, 4, 0.4)
    with pytest.raises(Exception):
        params.min_parts = 3  # frozen
    for bad in (dict(blur_kernel=4), dict(blur_sigma=0), dict(paf_samples=1), dict(max_peaks_per_part=0),
                dict(paf_min_fraction=1.5), dict(min_parts=1)):
        with pytest.raises(ValueError, match=list(bad)[0]):
            ParseParams(**bad)
    heat_shape, paf_shape = SIZES["trt_pose"]
    people = random_scene(np.random.default_rng(9), 3, heat_shape, min_height_cells=10, separate=True)
    heat, paf = render(people, "trt_pose", heat_shape, paf_shape)
    assert len(parse_poses(heat, paf, "trt_pose")[0]) == len(people)
    assert len(parse_poses(heat, paf, "trt_pose", ParseParams(min_person_score=5.0))[0]) == 0
    assert len(parse_poses(heat, paf, "trt_pose", ParseParams(peak_threshold=2.0))[0]) == 0


# --- hostile input -------------------------------------------------------------------------------

def _empty(result):
    keypoints, scores = result
    return keypoints.shape == (0, 18, 3) and scores.shape == (0,)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 0.0, -1.0, -1e30, 3e38])
def test_constant_maps_never_raise(value):
    heat = np.full((19, 36, 48), value, np.float32)
    paf = np.full((38, 144, 192), value, np.float32)
    keypoints, scores = parse_poses(heat, paf, "bodyposenet")
    assert np.isfinite(keypoints).all() and np.isfinite(scores).all()
    if not value > 0:
        assert _empty((keypoints, scores))


def test_non_finite_values_in_a_real_scene_count_as_zero():
    heat_shape, paf_shape = SIZES["bodyposenet"]
    people = random_scene(np.random.default_rng(6), 3, heat_shape, min_height_cells=10, separate=True)
    heat, paf = render(people, "bodyposenet", heat_shape, paf_shape)
    rng = np.random.default_rng(0)
    for arr in (heat, paf):
        flat = arr.reshape(-1)
        idx = rng.choice(flat.size, flat.size // 50, replace=False)
        flat[idx] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), idx.size)
    keypoints, scores = parse_poses(heat, paf, "bodyposenet")
    assert np.isfinite(keypoints).all() and np.isfinite(scores).all()
    same_people((keypoints, scores), oracle_parse(heat, paf, "bodyposenet"), heat_shape)


def test_maps_full_of_peaks_are_bounded_in_time_and_memory():
    rng = np.random.default_rng(0)
    checker = (np.indices((200, 240)).sum(axis=0) % 2).astype(np.float32)
    cases = [
        (np.broadcast_to(checker, (19, 200, 240)).copy(), rng.uniform(-1, 1, (38, 200, 240)).astype(np.float32)),
        (rng.random((19, 200, 240), dtype=np.float32), np.ones((38, 800, 960), np.float32)),
        (np.ones((19, 36, 48), np.float32), np.ones((38, 144, 192), np.float32)),  # one flat plateau
    ]
    params = ParseParams()
    for heat, paf in cases:
        part = find_peaks(heat[:18], params)[0]
        assert np.bincount(part, minlength=18).max() <= params.max_peaks_per_part
        tracemalloc.start()
        start = time.perf_counter()
        keypoints, scores = parse_poses(heat, paf, "bodyposenet")
        elapsed = time.perf_counter() - start
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert np.isfinite(keypoints).all() and len(keypoints) <= 18 * params.max_peaks_per_part
        assert elapsed < 10.0
        assert peak_bytes < 150e6, peak_bytes


@pytest.mark.parametrize("heat_shape, paf_shape, message", [
    ((36, 48), (38, 144, 192), r"heatmaps must have shape \(18 or 19, H, W\)"),
    ((1, 19, 36, 48), (38, 144, 192), r"heatmaps must have shape \(18 or 19, H, W\)"),
    ((17, 36, 48), (38, 144, 192), r"got \(17, 36, 48\)"),
    ((20, 36, 48), (38, 144, 192), r"got \(20, 36, 48\)"),
    ((19, 0, 48), (38, 144, 192), r"H, W >= 1"),
    ((19, 36, 48), (36, 144, 192), r"pafs must have shape \(38, H', W'\)"),
    ((19, 36, 48), (1, 38, 144, 192), r"pafs must have shape \(38, H', W'\)"),
    ((19, 36, 48), (38, 0, 192), r"got \(38, 0, 192\)"),
])
def test_wrong_shapes_name_the_shape_expected(heat_shape, paf_shape, message):
    with pytest.raises(ValueError, match=message):
        parse_poses(np.zeros(heat_shape, np.float32), np.zeros(paf_shape, np.float32), "bodyposenet")


def test_bad_arguments():
    heat, paf = np.zeros((19, 8, 8), np.float32), np.zeros((38, 8, 8), np.float32)
    with pytest.raises(ValueError, match="must hold numbers"):
        parse_poses(heat.astype(str), paf, "bodyposenet")
    with pytest.raises(ValueError, match="unknown model spec"):
        parse_poses(heat, paf, "no-such-model")
    with pytest.raises(ValueError, match="topology limb 0"):
        parse_poses(heat, paf[:2], (Limb(1, 18, 0, 1),))
    with pytest.raises(ValueError, match="topology must be"):
        parse_poses(heat, paf, (1, 2))
    with pytest.raises(TypeError, match="ParseParams"):
        parse_poses(heat, paf, "bodyposenet", {"min_parts": 3})
    # other numeric dtypes are accepted
    assert _empty(parse_poses(heat.astype(np.float64), paf.astype(np.int8), "bodyposenet"))


# --- the real model on real images ---------------------------------------------------------------

def _shared_images():
    try:
        from tests.conftest import SHARED_DATA
    except ImportError:
        from conftest import SHARED_DATA
    return SHARED_DATA / "images"


def image_maps(model, image):
    """The model's maps of an image's upright view, through the camera pipeline as the CLI runs it."""
    from edge.config import load_config
    from edge.pipeline import CameraPipeline

    return CameraPipeline("test", load_config(None, env={}), model).maps(image)


def _frame(path):
    import cv2

    frame = cv2.imread(str(path))
    assert frame is not None, "cannot read %s" % path
    return frame


def test_apollo_crew(pose_model):
    path = _shared_images() / "apollo11_crew.jpg"
    if not path.is_file():
        pytest.skip("test image %s is absent (../shared/data sits beside the repository in CI)" % path)
    frame = _frame(path)
    heat, paf, transform = image_maps(pose_model, frame)
    keypoints, scores = parse_poses(heat, paf, pose_model.spec.topology)
    same_people((keypoints, scores), oracle_parse(heat, paf, pose_model.spec.topology), heat.shape[1:])
    keypoints = transform.keypoints_to_frame(keypoints)
    assert len(keypoints) == 3, scores
    h, w = frame.shape[:2]
    necks = keypoints[:, KEYPOINT_INDEX["neck"], :2] * [w, h]
    crew = keypoints[np.argsort(necks[:, 0])]  # left to right
    labelled_necks = np.array([(145, 245), (290, 160), (440, 250)], float)  # hand-labelled, pixels
    for person, neck in zip(crew, labelled_necks):
        found = {KEYPOINTS[i] for i in np.flatnonzero(person[:, 2] > 0)}
        assert {"nose", "neck", "r_shoulder", "l_shoulder", "r_eye", "l_eye", "l_elbow", "l_wrist"} <= found
        assert np.hypot(*(person[KEYPOINT_INDEX["neck"], :2] * [w, h] - neck)) < 40
        head = person[[KEYPOINT_INDEX[n] for n in ("nose", "r_eye", "l_eye")], 1]
        assert (head < person[KEYPOINT_INDEX["neck"], 1]).all()  # the head above the neck
        # the image's left shoulder is the person's right one (they face the camera)
        assert person[KEYPOINT_INDEX["r_shoulder"], 0] < person[KEYPOINT_INDEX["l_shoulder"], 0]
    # the two outer crew members show both arms
    for person in crew[[0, 2]]:
        assert (person[[KEYPOINT_INDEX[n] for n in ("r_elbow", "r_wrist")], 2] > 0).all()


def test_same_people_as_the_oracle_on_coco(pose_model):
    folder = _shared_images() / "coco"
    images = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if not images:
        pytest.skip("test images %s are absent (../shared/data sits beside the repository in CI)" % folder)
    total = 0
    for path in images:
        heat, paf, _ = image_maps(pose_model, _frame(path))
        result = parse_poses(heat, paf, pose_model.spec.topology)
        same_people(result, oracle_parse(heat, paf, pose_model.spec.topology), heat.shape[1:])
        total += len(result[0])
    assert total >= len(images)  # every image has somebody in it

