"""runtime.backend: every backend/precision offered gives torch fp32's numbers, the export is
cached and checked, and what cannot run here is refused in one line.

The real LiteMedSAM (offline profile) on a few synth frames; the export is made once per
session into a temporary weights cache. Speed is measured in `clipsam-ros bench --backends`.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
import torch
from torch import nn

from clipsam_ros.config import set_value
from clipsam_ros.data.synth import make_sample, sample_seed
from clipsam_ros.eval.metrics import iou
from clipsam_ros.localize.reference import save_bank
from clipsam_ros.models.backends import BACKENDS, BackendError, resolve_backend
from clipsam_ros.models.export import MANIFEST, ExportError, ExportSpec, check_export, ensure_export

CPU = torch.device("cpu")
# (product, defect kind or None, seed): defects of three kinds and a good part
FRAMES = [("metal", "stain", 5), ("metal", None, 9), ("metal", "scratch", 11), ("metal", "hole", 12)]
# every pair the backends offer on the CPU: this test is what lets a pair into Backend.precisions
PAIRS = [(name, p) for name, b in BACKENDS.items() for p in b.precisions(CPU)]
EMBEDDING_ATOL = {"fp32": 1e-4, "bf16": 0.1}


def _cfg(offline_cfg, cache, backend="torch", precision="fp32", **more):
    import copy

    cfg = copy.deepcopy(offline_cfg)
    for k, v in {"device": "cpu", "weights.cache_dir": str(cache), "runtime.backend": backend,
                 "precision": precision, "runtime.warmup_frames": 0, **more}.items():
        set_value(cfg, k, v)
    return cfg


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("weights_cache")


@pytest.fixture(scope="session")
def images():
    return [make_sample(p, k, seed=s)[0] for p, k, s in FRAMES]


@pytest.fixture(scope="session")
def reference(offline_cfg, cache, tmp_path_factory):
    """torch fp32: the Inspector (its bank built from good parts, saved for the other backends)
    and its results on the frames."""
    from clipsam_ros.inspector import Inspector

    goods = [make_sample("metal", None, sample_seed(0, "metal", "train/good", i))[0] for i in range(3)]
    inspector = Inspector.from_config(_cfg(offline_cfg, cache), progress=False, references=goods)
    bank = tmp_path_factory.mktemp("bank") / "bank.safetensors"
    save_bank(inspector.localizer.bank, bank)
    return inspector, bank


def _run(inspector, images):
    embeddings = [inspector.sam.encode(image).features for image in images]
    return embeddings, [inspector.inspect(image) for image in images]


def _skip_unless_offered(backend, precision):
    why = BACKENDS[backend].unavailable(CPU)
    if why:
        pytest.skip(why)
    if precision not in BACKENDS[backend].precisions(CPU):
        pytest.skip(f"{backend} offers no {precision} on this CPU")


@pytest.mark.slow   # every backend over synth frames: exports and compiles the real encoder
@pytest.mark.parametrize("backend,precision", PAIRS)
def test_every_backend_gives_torch_fp32s_embeddings_masks_and_verdicts(offline_cfg, cache, images, reference,
                                                                       backend, precision):
    from clipsam_ros.inspector import Inspector

    _skip_unless_offered(backend, precision)
    torch_inspector, bank = reference
    want_emb, want = _run(torch_inspector, images)
    # the bank built on torch, used on this backend
    cfg = _cfg(offline_cfg, cache, backend, precision, **{"localizer.bank": str(bank)})
    inspector = Inspector.from_config(cfg, progress=False)
    assert inspector.sam.encoder_net.name == backend
    got_emb, got = _run(inspector, images)
    for a, b, r, s in zip(want_emb, got_emb, want, got):
        assert (a - b).abs().max().item() < EMBEDDING_ATOL[precision]
        assert s.verdict == r.verdict != "error"
        assert iou(s.mask > 0, r.mask > 0) >= 0.99 if r.mask.any() or s.mask.any() else True
        assert s.encoder_calls == r.encoder_calls == {"sam": 1, "clip": 0, "backbone": 1}
    assert any(r.verdict == "fail" for r in want) and any(r.verdict == "pass" for r in want)


@pytest.mark.slow   # the real encoder exported and compiled on every backend
@pytest.mark.parametrize("backend", ["torch", *BACKENDS])
def test_several_cameras_frames_are_one_encoder_pass_on_every_backend(offline_cfg, cache, images, backend):
    from clipsam_ros.models.sam import build_sam

    if backend != "torch":
        _skip_unless_offered(backend, "fp32")
    sam = build_sam(_cfg(offline_cfg, cache, backend), CPU)
    out = sam.encode_batch(images[:3])
    assert sam.encoder_net.max_batch is None            # a free batch axis (TinyViT's len(x) fixed)
    assert (sam.encoder_calls, sam.images_encoded) == (1, 3) and len(out) == 3
    assert (out[1].features - sam.encode(images[1]).features).abs().max().item() < 1e-4


def test_auto_picks_openvino_on_the_cpu_and_torch_stays_todays_path():
    _skip_unless_offered("openvino", "fp32")
    assert resolve_backend("auto", "fp32", CPU).backend == "openvino"
    assert resolve_backend("torch", "bf16", CPU).backend == "torch"      # torch on the cpu: fp32, as before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_tensorrt_without_cuda_is_refused_in_one_line():
    with pytest.raises(BackendError, match="runtime.backend=tensorrt: TensorRT needs a CUDA device") as err:
        resolve_backend("tensorrt", "fp32", CPU)
    assert "\n" not in str(err.value)


def test_a_precision_a_backend_does_not_offer_is_refused_in_one_line():
    with pytest.raises(BackendError, match="precision=bf16 with runtime.backend=onnxruntime.*set precision: fp32"):
        resolve_backend("onnxruntime", "bf16", CPU)
    # bf16 through openvino was measured to change masks here (benchmarks/backend_equivalence.py)
    with pytest.raises(BackendError, match="runtime.backend=openvino: measured .*mask IoU below 0.99"):
        resolve_backend("openvino", "bf16", CPU)
    # auto does not pick what it would refuse; the cpu computes fp32 anyway (torch has no cpu
    # autocast), so auto takes the fastest fp32 backend instead of torch
    expected = resolve_backend("auto", "fp32", CPU)
    assert expected.precision == "fp32"
    assert resolve_backend("auto", "bf16", CPU) == expected
    assert resolve_backend("auto", "fp16", CPU) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
def test_cuda_backends_give_torch_fp32s_embedding(offline_cfg, cache, images, backend):
    from clipsam_ros.models.sam import build_sam

    cuda = torch.device("cuda")
    if BACKENDS[backend].unavailable(cuda):
        pytest.skip(BACKENDS[backend].unavailable(cuda))
    want = build_sam(_cfg(offline_cfg, cache, "torch", device="cuda"), cuda).encode(images[0]).features
    got = build_sam(_cfg(offline_cfg, cache, backend, device="cuda"), cuda).encode(images[0]).features
    assert (want - got).abs().max().item() < 1e-3


# ---------------------------------------------------------------- export: cached and checked

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x).relu()


def _spec(seed=0, variant="tiny"):
    torch.manual_seed(seed)
    return ExportSpec(network="tiny_encoder", module=Tiny().eval(), sample=torch.zeros(1, 3, 8, 8),
                      source_sha256="0" * 64, config={"sam.variant": variant})


def test_the_export_is_reused_and_a_corrupt_or_stale_one_is_rebuilt(tmp_path):
    spec = _spec()
    onnx = ensure_export(spec, cache_dir=str(tmp_path))
    folder = onnx.parent.parent
    manifest = json.loads((folder / MANIFEST).read_text())
    entry = manifest["networks"]["tiny_encoder"]
    assert entry["source_sha256"] == "0" * 64 and entry["inputs"] == {"pixels": [1, 3, 8, 8]}
    assert set(entry["files"]) == {"tiny_encoder/tiny_encoder.onnx"} and entry["exporter"]["opset"] == 17
    assert entry["outputs"] == {"features": [1, 4, 8, 8]} and manifest["runtimes"]["onnxruntime"]
    stamp = onnx.stat().st_mtime_ns
    assert ensure_export(spec, cache_dir=str(tmp_path)) == onnx and onnx.stat().st_mtime_ns == stamp
    onnx.write_bytes(onnx.read_bytes()[:-10])                            # truncated
    assert "does not match its sha256" in check_export(folder, spec)
    assert ensure_export(spec, cache_dir=str(tmp_path)) == onnx and check_export(folder, spec) == ""
    # no temp folder left next to it
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    # other weights or config: another folder, the first one untouched
    other = _spec(variant="tiny2")
    assert ensure_export(other, cache_dir=str(tmp_path)).parent.parent != folder


def test_the_cache_keeps_the_last_used_exports_of_a_network(tmp_path):
    """Each new key (weights, config, torch) is a new folder: beyond KEEP_PER_NETWORK the least
    recently used go, a reused one counts as used, and other networks are never touched."""
    from clipsam_ros.models.export import KEEP_PER_NETWORK, prune_cache

    folders = []
    for n in range(KEEP_PER_NETWORK):
        folders.append(ensure_export(_spec(variant=f"v{n}"), cache_dir=str(tmp_path)).parent.parent)
        os.utime(folders[-1] / MANIFEST, (1000 + n, 1000 + n))      # v0 used first, v2 last
    neighbour = tmp_path / "exports" / "tiny_encoder_b-0123456789abcdef"   # a network whose name extends ours
    neighbour.mkdir()
    crashed = tmp_path / "exports" / ".tiny_encoder-0123456789abcdef.part-x1"   # a crashed export's temp folder
    crashed.mkdir()
    os.utime(crashed, (1000, 1000))
    ensure_export(_spec(variant="v0"), cache_dir=str(tmp_path))        # v0 reused: now the last used
    newest = ensure_export(_spec(variant="v3"), cache_dir=str(tmp_path)).parent.parent
    left = sorted(p.name for p in (tmp_path / "exports").iterdir())
    assert left == sorted([folders[0].name, folders[2].name, newest.name, neighbour.name])
    assert not folders[1].exists() and not crashed.exists()
    # what was used within the hour stays, whatever the count: another process may be loading it
    os.utime(folders[0] / MANIFEST, (1000, 1000))
    os.utime(folders[2] / MANIFEST, None)
    assert prune_cache(newest, "tiny_encoder", keep=1) == [folders[0]] and folders[2].exists()


def test_a_given_export_dir_that_does_not_match_is_refused_in_one_line(tmp_path):
    from clipsam_ros.models.export import write_export

    write_export([_spec()], tmp_path / "exp")
    assert ensure_export(_spec(), export_dir=str(tmp_path / "exp")).is_file()
    with pytest.raises(ExportError, match=r"runtime.export_dir: .*exported for another config.*clipsam-ros export"):
        ensure_export(_spec(variant="other"), export_dir=str(tmp_path / "exp"))
    (tmp_path / "exp" / "tiny_encoder" / "tiny_encoder.onnx").write_bytes(b"not a graph")
    with pytest.raises(ExportError, match="tiny_encoder/tiny_encoder.onnx does not match its sha256") as err:
        ensure_export(_spec(), export_dir=str(tmp_path / "exp"))
    assert "\n" not in str(err.value)
    # a network the folder was not exported with (another localizer backbone, say)
    other = ExportSpec(network="backbone_x", module=Tiny().eval(), sample=torch.zeros(1, 3, 8, 8),
                       source_sha256="0" * 64, config={})
    with pytest.raises(ExportError, match="manifest.json has no backbone_x; run `clipsam-ros export"):
        ensure_export(other, export_dir=str(tmp_path / "exp"))
    # a folder written by an older clipsam_ros (one network, no format 2): refused, not misread
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / MANIFEST).write_text(json.dumps({"format": 1, "network": "tiny_encoder"}))
    with pytest.raises(ExportError, match="written in export format 1, this version reads 2"):
        ensure_export(_spec(), export_dir=str(tmp_path / "old"))


def test_an_exported_tiny_net_runs_the_same_on_every_cpu_backend(tmp_path):
    spec = _spec()
    onnx = ensure_export(spec, cache_dir=str(tmp_path))
    x = torch.rand(1, 3, 8, 8)
    want = spec.module(x)
    for name, backend in BACKENDS.items():
        if backend.unavailable(CPU):
            continue
        net = backend.load(onnx, CPU, "fp32")
        assert net.max_batch == 1 and torch.allclose(net(x), want, atol=1e-5), name
    assert np.isfinite(want.detach().numpy()).all()


class TwoLevels(nn.Module):
    """Like the backbone: two outputs at two strides."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 5, 3, stride=2, padding=1)

    def forward(self, x):
        fine = self.a(x).relu()
        return fine, self.b(fine)


def test_a_free_batch_axis_and_two_outputs_run_in_one_call_on_every_cpu_backend(tmp_path):
    from clipsam_ros.models.backends import run_batched
    from clipsam_ros.models.export import batch_axes

    torch.manual_seed(0)
    spec = ExportSpec(network="two_levels", module=TwoLevels().eval(), sample=torch.zeros(2, 3, 16, 16),
                      source_sha256="0" * 64, config={}, output_names=("fine", "coarse"),
                      dynamic_axes=batch_axes(("pixels",), ("fine", "coarse")))
    onnx = ensure_export(spec, cache_dir=str(tmp_path))
    entry = json.loads((onnx.parent.parent / MANIFEST).read_text())["networks"]["two_levels"]
    assert entry["inputs"] == {"pixels": ["batch", 3, 16, 16]} and entry["outputs"]["coarse"] == ["batch", 5, 4, 4]
    x = torch.rand(3, 3, 16, 16)                 # traced with 2, run with 3 (and 1)
    want = spec.module(x)
    offered = [n for n, b in BACKENDS.items() if not b.unavailable(CPU)]
    assert offered, "no CPU backend installed"
    for name in offered:
        net = BACKENDS[name].load(onnx, CPU, "fp32")
        (fine, coarse), calls = run_batched(net, x)
        assert net.max_batch is None and calls == 1, name
        assert torch.allclose(fine, want[0], atol=1e-5) and torch.allclose(coarse, want[1], atol=1e-5), name
        assert torch.allclose(net(x[:1])[1], want[1][:1], atol=1e-5), name


def test_a_fixed_batch_graph_runs_once_per_frame_and_each_pass_is_counted(tmp_path):
    from clipsam_ros.models.backends import run_batched

    spec = _spec()
    net = BACKENDS["onnxruntime"].load(ensure_export(spec, cache_dir=str(tmp_path)), CPU, "fp32")
    out, calls = run_batched(net, torch.rand(3, 3, 8, 8))
    assert (net.max_batch, calls, tuple(out.shape)) == (1, 3, (3, 4, 8, 8))


@pytest.mark.slow   # the real encoder exported through the CLI
def test_cli_export_writes_a_folder_the_config_can_name(offline_cfg, cache, tmp_path, capsys):
    from clipsam_ros.cli.main import main
    from clipsam_ros.config import config_path
    from clipsam_ros.models.sam import build_sam

    _skip_unless_offered("openvino", "fp32")
    out = tmp_path / "exported"
    assert main(["export", "--config", str(config_path("offline.yaml")), "--set",
                 "localizer.backbone=efficientnet_lite0", "--out", str(out)]) == 0
    networks = json.loads((out / MANIFEST).read_text())["networks"]
    assert set(networks) == {"sam_image_encoder_lite_medsam", "sam_prompt_decoder_lite_medsam",
                             "backbone_efficientnet_lite0"}
    encoder, decoder = networks["sam_image_encoder_lite_medsam"], networks["sam_prompt_decoder_lite_medsam"]
    assert encoder["config"]["sam.variant"] == "lite_medsam" and encoder["inputs"] == {"pixels": ["batch", 3, 256, 256]}
    assert encoder["outputs"] == {"features": ["batch", 256, 64, 64]}
    assert "runtime.export_dir" in capsys.readouterr().out
    assert decoder["inputs"]["sparse"] == ["rows", "tokens", 256] and decoder["outputs"]["low_res_logits"] == \
        ["rows", 4, 256, 256]
    sam = build_sam(_cfg(offline_cfg, tmp_path / "empty_cache", "openvino", **{"runtime.export_dir": str(out)}), CPU)
    assert sam.encoder_net.name == sam.decoder_net.name == "openvino"
    from clipsam_ros.models.backbone import build_backbone

    backbone = build_backbone(_cfg(offline_cfg, tmp_path / "empty_cache", "openvino",
                                   **{"runtime.export_dir": str(out), "localizer.backbone": "efficientnet_lite0"}), CPU)
    assert backbone.encoder_net.name == "openvino" and networks["backbone_efficientnet_lite0"]["outputs"] == \
        {"stride8": ["batch", 40, backbone.size // 8, backbone.size // 8],
         "stride16": ["batch", 112, backbone.size // 16, backbone.size // 16]}
    assert not (tmp_path / "empty_cache").exists()                     # nothing exported again
    # the dir under a config that shapes the graph differently: refused, not used
    with pytest.raises(ExportError, match="runtime.export_dir"):
        build_sam(_cfg(offline_cfg, cache, "openvino", **{"runtime.export_dir": str(out), "runtime.sdpa": False}),
                  CPU)


_SIGNAL_AFTER_FREEING = """
import gc, os, signal, sys, threading, time
import torch
from test_backends import Tiny
from clipsam_ros.models.backends import BACKENDS
from clipsam_ros.models.export import ExportSpec, ensure_export

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
nets = []
for variant in ("a", "b"):
    spec = ExportSpec(network="tiny", module=Tiny().eval(), sample=torch.zeros(1, 3, 8, 8), source_sha256="0" * 64,
                      config={"v": variant})
    nets.append(BACKENDS["openvino"].load(ensure_export(spec, cache_dir=sys.argv[1]), torch.device("cpu"), "fp32"))
    nets[-1](torch.zeros(1, 3, 8, 8))
del nets[0]; gc.collect()      # freed in the order they were made, as a node's cleanup does
del nets[0]; gc.collect()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.2)
print("handled" if stop.is_set() else "not handled")
"""


@pytest.mark.slow   # a subprocess: the crash it guards against would take pytest down with it
def test_a_signal_after_openvino_nets_are_freed_is_handled(tmp_path):
    """Compiling sets an alternate signal stack on the thread; with a Core per net, freeing them
    left it pointing at freed memory and the next SIGTERM (a lifecycle manager's shutdown, then
    the service stopping the process) was a SIGSEGV. One Core per process."""
    import subprocess
    import sys

    _skip_unless_offered("openvino", "fp32")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.getcwd()]))
    done = subprocess.run([sys.executable, "-c", _SIGNAL_AFTER_FREEING, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "handled", (done.returncode, done.stderr[-2000:])


def test_a_compiled_net_shared_by_threads_answers_every_call():
    """One model may serve several inspectors or threads (the node's worker, a test, another
    camera's node): each backend takes concurrent calls, as a torch module does."""
    import threading

    spec = _spec()
    x = torch.rand(1, 3, 8, 8)
    want = spec.module(x)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = ensure_export(spec, cache_dir=tmp)
        for name, backend in BACKENDS.items():
            if backend.unavailable(CPU):
                continue
            net = backend.load(onnx, CPU, "fp32")
            outcomes: list = []

            def calls(net=net, outcomes=outcomes):
                try:
                    outcomes.extend(torch.allclose(net(x), want, atol=1e-5) for _ in range(50))
                except Exception as exc:  # noqa: BLE001 - the failure this test looks for
                    outcomes.append(exc)
            threads = [threading.Thread(target=calls) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert outcomes == [True] * 200, (name, [o for o in outcomes if o is not True][:1])
