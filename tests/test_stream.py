"""The stream localizer: warm-up, a defect repeated in a few frames, memories per camera, persistence."""
from __future__ import annotations

import pytest
import torch
from conftest import rewrite_metadata

from clipsam_ros.config import Config
from clipsam_ros.data.synth import make_sample
from clipsam_ros.inspector import Inspector
from clipsam_ros.localize import build_localizer
from clipsam_ros.localize.stream import MemoryFileError, StreamLocalizer, StreamWarmUp, load_memory
from clipsam_ros.models.backbone import BackboneModel

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def lite0():
    return BackboneModel("efficientnet_lite0", CPU)


@pytest.fixture(scope="module")
def frames(lite0):
    """Backbone features of 8 good metal parts and 3 with a stain."""
    good = [lite0.encode(make_sample("metal", None, seed=s)[0]) for s in range(8)]
    stained = [lite0.encode(make_sample("metal", "stain", seed=s)[0]) for s in range(20, 23)]
    return good, stained


def stream_cfg(**values) -> Config:
    cfg = Config()
    cfg.localizer.method, cfg.localizer.backbone = "stream", "efficientnet_lite0"
    cfg.localizer.window, cfg.localizer.warmup_frames, cfg.localizer.distance_scale = 8, 4, 4.0
    for name, value in values.items():
        setattr(cfg.localizer, name, value)
    return cfg


def run(loc: StreamLocalizer, feats, camera: int = 0) -> float:
    return loc(None, None, (480, 640), features=feats, camera=camera).image_score  # type: ignore[arg-type]


def test_warm_up_frames_are_errors_then_a_defect_seen_twice_stays_anomalous(frames, lite0):
    good, stained = frames
    cfg = stream_cfg(stream_skip_defective=False)      # even when the defects enter the memory
    loc = StreamLocalizer(cfg.localizer, lite0, cfg.refiner, "test")
    for feats in good[:4]:
        with pytest.raises(StreamWarmUp, match="stream warm-up"):
            run(loc, feats)
    normal = [run(loc, feats) for feats in good[4:6]]
    # the same kind of stain goes by twice, then a third time: 2 of 8 memory frames hold one,
    # the 30 % quantile (3rd smallest of 8 distances) still sees no match for it
    scores = [run(loc, feats) for feats in stained]
    assert min(scores) > max(normal) + 0.1, (scores, normal)
    # another camera has a memory of its own: still warming up
    with pytest.raises(StreamWarmUp, match="camera 1"):
        run(loc, good[0], camera=1)


def test_the_skip_rule_follows_a_live_refiner_threshold(frames, lite0):
    good, stained = frames
    cfg = stream_cfg(stream_skip_defective=True)
    loc = StreamLocalizer(cfg.localizer, lite0, cfg.refiner, "test")
    for feats in good[:4]:
        with pytest.raises(StreamWarmUp):
            run(loc, feats)
    cfg.refiner.threshold = 1.0           # what ros2 param set does to the Inspector's config
    assert run(loc, good[4]) < 0.5
    assert len(loc.memory(0)) == 5        # below the threshold: learnt
    cfg.refiner.threshold = 0.0           # now every frame reaches it
    run(loc, good[5])
    assert len(loc.memory(0)) == 5        # judged defective: kept out


def test_memory_round_trips_and_a_mismatched_file_is_refused(frames, lite0, tmp_path):
    good, stained = frames
    path = tmp_path / "memory.safetensors"
    cfg = stream_cfg(memory=str(path))
    loc = StreamLocalizer(cfg.localizer, lite0, cfg.refiner, "efficientnet_lite0 layers 2,4@224")
    for feats in good[:4]:
        with pytest.raises(StreamWarmUp):
            run(loc, feats)
    run(loc, good[4])                     # a fifth frame learnt: saved only every warmup_frames (4)
    on_disk = StreamLocalizer(cfg.localizer, lite0, cfg.refiner, "efficientnet_lite0 layers 2,4@224")
    assert len(on_disk.memory(0)) == 4
    loc.close()                           # what the node's cleanup does: the fifth is kept too
    again = StreamLocalizer(cfg.localizer, lite0, cfg.refiner, "efficientnet_lite0 layers 2,4@224")
    assert len(again.memory(0)) == 5
    assert [m.level for m in again.memory(0)] == pytest.approx([m.level for m in loc.memory(0)])
    assert run(again, stained[0]) == pytest.approx(run(loc, stained[0]))   # no warm-up after a restart
    with pytest.raises(MemoryFileError, match="localizer.memory=.*delete it"):
        StreamLocalizer(cfg.localizer, lite0, cfg.refiner, "sam:lite_medsam layers sam")
    # a memory saved before the backbone's padding fix (no "padding" in its metadata)
    rewrite_metadata(path, padding=None)
    old = "localizer.memory=.*before the backbone's padding fix.*start afresh"
    with pytest.raises(MemoryFileError, match=old) as info:
        StreamLocalizer(cfg.localizer, lite0, cfg.refiner, "efficientnet_lite0 layers 2,4@224")
    assert "\n" not in str(info.value)
    # SAM cells have no padding to fix: such a memory without the key still loads
    rewrite_metadata(path, source="sam:lite_medsam layers sam")
    assert load_memory(path, "sam:lite_medsam layers sam", 8)


def test_a_memory_without_calibration_is_calibrated_not_judged_against_a_made_up_level(frames, lite0):
    """Levels are NaN until calibrated; a restored memory saved before that (or by an older
    version) is calibrated on its first judged frame, never scored against a stand-in of 1.0."""
    from clipsam_ros.config import ConfigError, set_value

    good, stained = frames
    cfg = stream_cfg()
    loc = StreamLocalizer(cfg.localizer, lite0, cfg.refiner, "test")
    for feats in good[:4]:
        with pytest.raises(StreamWarmUp):
            run(loc, feats)
    calibrated = [m.level for m in loc.memory(0)]
    reference = run(loc, stained[0])
    fresh = StreamLocalizer(cfg.localizer, lite0, cfg.refiner, "test")
    fresh.memories[0] = type(loc.memory(0))(
        [type(m)(m.grid, float("nan")) for m in loc.memory(0)][:4], maxlen=cfg.localizer.window)
    assert run(fresh, stained[0]) == pytest.approx(reference)
    assert [m.level for m in fresh.memory(0)] == pytest.approx(calibrated)
    # one frame has no other to be calibrated against: a warm-up of one frame is refused
    with pytest.raises(ConfigError, match="localizer.warmup_frames"):
        set_value(Config(), "localizer.warmup_frames", "1")


@pytest.mark.slow   # whole frames through the real models
def test_inspector_answers_warm_up_with_a_rejected_error_and_its_own_warm_up_learns_nothing(lite_sam):
    cfg = stream_cfg()
    localizer = build_localizer(cfg, lite_sam, CPU, progress=False)
    inspector = Inspector(cfg, lite_sam, localizer, CPU)
    inspector.warm_up(frames=1)
    assert len(localizer.memory(0)) == 0
    image, _ = make_sample("metal", None, seed=1)
    result = inspector.inspect(image)
    assert result.verdict == "error" and result.reject and "stream warm-up" in result.error
    assert result.encoder_calls == {"sam": 1, "clip": 0, "backbone": 1}
    assert len(localizer.memory(0)) == 1
    # batches: one memory per camera (by default the frame's index in the batch)
    inspector.inspect_batch([image, image])
    assert len(localizer.memory(0)) == 2 and len(localizer.memory(1)) == 1
    # a batch without camera 0 (silent this window) feeds the cameras it came from
    inspector.inspect_batch([image, image], cameras=[2, 1])
    assert [len(localizer.memory(c)) for c in (0, 1, 2)] == [2, 2, 1]
