"""XMem re-implementation: architecture, golden weight recipe, checkpoint loading."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from xmem import CheckpointError, XMemNetwork, load_network, network_from_state_dict
from xmem.conv import TUNER, Conv2d, candidates, conv_bn, fast_convs, nnpack_available
from xmem.inference import argmax_channels
from xmem.kernels import MAX_ROUNDS, KernelTuner
from xmem.memory import KeyValueStore, MemoryManager, get_similarity, topk_softmax
from xmem.modules import FeatureFusionBlock
from xmem.recipe import recipe_state_dict, write_recipe_weights
from xmem_fixtures import STATE_DICT_SHAPES, WEIGHTS_MANIFEST

NUM_PARAMETERS = 62_185_224


@pytest.fixture(scope="module")
def recipe() -> dict[str, torch.Tensor]:
    return recipe_state_dict()


@pytest.fixture(scope="module")
def recipe_file(recipe, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("xmem") / "XMem.pth"
    torch.save(recipe, path)
    return path


def test_state_dict_matches_upstream_layout():
    spec = json.loads(STATE_DICT_SHAPES.read_text())
    expected = {k: v for k, v in spec.items() if not k.startswith("_")}
    sd = XMemNetwork().state_dict()
    assert list(sd) == list(expected)  # same keys, same (upstream) order
    for key, entry in expected.items():
        assert list(sd[key].shape) == entry["shape"], key
        assert str(sd[key].dtype).removeprefix("torch.") == entry["dtype"], key
    net = XMemNetwork()
    assert sum(p.numel() for p in net.parameters()) == NUM_PARAMETERS
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 58


def test_dims_read_from_state_dict():
    small = XMemNetwork(key_dim=32, value_dim=256, hidden_dim=16).state_dict()
    dims = XMemNetwork.dims_from_state_dict(small)
    assert dims == {"key_dim": 32, "value_dim": 256, "hidden_dim": 16}
    no_hidden = XMemNetwork(hidden_dim=0).state_dict()
    assert not any("hidden" in k for k in no_hidden)
    assert XMemNetwork.dims_from_state_dict(no_hidden)["hidden_dim"] == 0


def test_recipe_is_bit_exact(recipe):
    manifest = json.loads(WEIGHTS_MANIFEST.read_text())
    entries = manifest["entries"]
    assert [e["key"] for e in entries] == list(recipe)
    for e in entries:
        t = recipe[e["key"]]
        assert list(t.shape) == e["shape"], e["key"]
        assert str(t.dtype).removeprefix("torch.") == e["dtype"], e["key"]
        digest = hashlib.sha256(t.numpy().tobytes()).hexdigest()
        assert digest == e["sha256"], f"recipe value differs for {e['key']} (i={e['i']})"


def test_write_and_load_recipe_weights(recipe, tmp_path):
    path = write_recipe_weights(tmp_path / "w.pth")
    net = load_network(path)
    assert not net.training
    sd = net.state_dict()
    assert all(torch.equal(sd[k], recipe[k]) for k in recipe)


def test_load_errors_name_bad_keys(recipe):
    sd = dict(recipe)
    del sd["decoder.pred.weight"]
    sd["decoder.extra.weight"] = torch.zeros(3)
    sd["key_encoder.bn1.weight"] = torch.zeros(65)
    with pytest.raises(CheckpointError) as info:
        network_from_state_dict(sd)
    msg = str(info.value)
    assert "1 missing" in msg and "decoder.pred.weight" in msg
    assert "1 unexpected" in msg and "decoder.extra.weight" in msg
    assert "1 mis-shaped" in msg and "key_encoder.bn1.weight [65]" in msg


def test_load_network_rejects_wrong_file(tmp_path):
    path = tmp_path / "not_xmem.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    expected = r"412 missing key\(s\).*1 unexpected key\(s\): fc.weight"
    with pytest.raises(CheckpointError, match=expected):
        load_network(path)
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_network(bad)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"key_proj.key_proj.weight": _Exploit(marker)}, f)
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_network(path)
    assert not marker.exists()
    torch.save({"x": _Exploit(marker)}, tmp_path / "evil2.pth")
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_network(tmp_path / "evil2.pth")
    assert not marker.exists()


def test_single_object_checkpoint_is_widened(recipe):
    sd = dict(recipe)
    w = sd["value_encoder.conv1.weight"]
    sd["value_encoder.conv1.weight"] = w[:, :4].clone()
    net = network_from_state_dict(sd)
    got = net.state_dict()["value_encoder.conv1.weight"]
    assert got.shape == (64, 5, 7, 7)
    assert torch.equal(got[:, :4], w[:, :4]) and not got[:, 4].any()


# ------------------------------------------------------------------- memory weak spots
def test_topk_softmax_far_keys_no_nan():
    sim = torch.full((1, 50, 7), -1e4)
    sim[0, 3] = -2e4
    aff = topk_softmax(sim, top_k=30)
    assert torch.isfinite(aff).all()
    assert torch.allclose(aff.sum(dim=1), torch.ones(1, 7))
    # also through the similarity: memory keys far from the query
    mk = torch.full((1, 64, 40), 100.0)
    qk = torch.zeros((1, 64, 2, 3))
    aff = topk_softmax(get_similarity(mk, torch.ones(1, 1, 40), qk, torch.ones(1, 64, 2, 3)), 30)
    assert torch.isfinite(aff).all() and torch.allclose(aff.sum(dim=1), torch.ones(1, 6))


def test_topk_capped_at_memory_size():
    aff = topk_softmax(torch.randn(1, 6, 4), top_k=30)
    assert torch.allclose(aff.sum(dim=1), torch.ones(1, 4))


def test_obsolete_removal_on_ties_drops_exactly_requested():
    store = KeyValueStore(count_usage=True)
    n = 20
    store.add(
        torch.arange(n, dtype=torch.float32).view(1, 1, n).repeat(1, 4, 1),
        torch.zeros(2, 8, n),
        torch.ones(1, 1, n),
        None,
    )
    store.update_usage(torch.full((n,), 0.5))  # every element has the same usage
    removed = store.remove_obsolete(max_size=15)
    assert removed == 5 and store.size == 15
    assert store.value.shape[-1] == 15 and store.use_count.shape[-1] == 15


def test_sparse_memory_read_matches_dense():
    from xmem.inference import DEFAULT_CONFIG

    torch.manual_seed(0)
    managers = [MemoryManager(DEFAULT_CONFIG, hidden_dim=4, fast=f) for f in (False, True)]
    for t in range(12):  # 12 memory frames of 4x5: triggers a consolidation
        key, s = torch.randn(1, 8, 4, 5), torch.rand(1, 1, 4, 5) + 1
        value, sel = torch.randn(1, 2, 6, 4, 5), torch.rand(1, 8, 4, 5)
        q, qe = torch.randn(1, 8, 4, 5), torch.rand(1, 8, 4, 5)
        reads = [m.match_memory(q, qe) for m in managers] if t else None
        if reads:
            assert torch.allclose(reads[0], reads[1], atol=1e-5), t
        for m in managers:
            m.add_memory(key, s, value, sel)
    dense, fast = managers
    assert dense.stats.consolidations == fast.stats.consolidations == 1
    assert torch.allclose(dense.work.use_count, fast.work.use_count, atol=1e-5)
    assert torch.allclose(dense.long.use_count, fast.long.use_count, atol=1e-5)


def test_shared_image_fusion_matches_concatenation():
    torch.manual_seed(0)
    fuser = FeatureFusionBlock(16, 8, 32, 32).eval()
    x, g = torch.randn(1, 16, 5, 6), torch.randn(1, 3, 8, 5, 6)
    with torch.inference_mode():
        assert torch.allclose(fuser(x, g, share_image=True), fuser(x, g), atol=1e-5)


# ------------------------------------------------------- convolution kernels, measured
def test_every_3x3_kernel_computes_the_same_convolution():
    torch.manual_seed(0)
    conv = Conv2d(24, 16, 3, padding=1).eval()
    x = torch.randn(2, 24, 40, 48)
    nnpack = {"nnpack", "nnpack_per_image"} if nnpack_available() else set()
    with torch.inference_mode():
        direct = F.conv2d(x, conv.weight, conv.bias, padding=1)
        options = candidates(x, conv.weight, conv.bias, (1, 1), (1, 1), (1, 1), 1)
        assert set(options) == {"direct", "channels_last", "winograd"} | nnpack
        outputs = {name: fn() for name, fn in options.items()}
    for other in {"winograd"} | nnpack:
        assert not torch.equal(outputs[other], direct)  # really another algorithm ...
    for name, out in outputs.items():
        assert out.shape == direct.shape and out.is_contiguous(), name
        assert torch.allclose(out, direct, rtol=1e-4, atol=1e-4), name  # ... same convolution


@pytest.mark.parametrize(
    "shape",
    [(1, 3, 1, 1), (2, 5, 7, 3), (3, 16, 13, 18), (1, 8, 4, 4), (1, 4, 33, 2)],
    ids=["1x1", "7x3", "13x18", "one-tile", "33x2"],
)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize(
    "band_floats, filter_floats",
    [(1, None), (None, 1), (1, 1)],
    ids=["a-band-per-row", "a-filter-slice-per-channel", "both"],
)
def test_winograd_is_the_same_convolution_at_any_size(
    monkeypatch, shape, bias, band_floats, filter_floats
):
    """Sizes that are not whole 4x4 tiles and single pixels, in one pass against float64
    (from either memory format); then the banded pass and the filter transformed slice by
    slice (each band then meets every slice) against that one pass: only the products'
    summation order may differ."""
    from xmem import winograd

    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64).float()
    weight = torch.randn(6, shape[1], 3, 3) / (shape[1] * 9) ** 0.5
    b = torch.randn(6) if bias else None
    exact = F.conv2d(x.double(), weight.double(), None if b is None else b.double(), padding=1)
    whole = winograd.conv3x3(x, weight, b)
    assert whole.shape == exact.shape and whole.dtype == torch.float32 and whole.is_contiguous()
    assert torch.allclose(whole.double(), exact, rtol=1e-5, atol=1e-5)
    # A channels-last input (the CUDA schedule's activations) is read as the same planes.
    last = winograd.conv3x3(x.contiguous(memory_format=torch.channels_last), weight, b)
    assert torch.equal(last, whole)
    if band_floats is not None:
        monkeypatch.setattr(winograd, "BAND_FLOATS", band_floats)
    if filter_floats is not None:
        monkeypatch.setattr(winograd, "FILTER_FLOATS", filter_floats)
    split = winograd.conv3x3(x, weight, b)
    assert split.shape == exact.shape and split.is_contiguous()
    assert torch.allclose(split, whole, rtol=1e-5, atol=1e-5)


def test_winograd_is_offered_only_where_it_computes_the_convolution():
    """fp32 stride-1 'same' 3x3 only (at any channel count: the filter is transformed in
    bounded slices); not under bf16 autocast."""
    x, w = torch.randn(1, 8, 6, 6), torch.randn(8, 8, 3, 3)
    plain = ((1, 1), (1, 1), (1, 1), 1)
    with torch.inference_mode():
        assert "winograd" in candidates(x, w, None, *plain)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert "winograd" not in candidates(x, w, None, *plain)
        assert "winograd" not in candidates(x.double(), w.double(), None, *plain)
    assert "winograd" not in candidates(x, w, None, (2, 2), (1, 1), (1, 1), 1)
    assert "winograd" not in candidates(x, w, None, (1, 1), (0, 0), (1, 1), 1)
    wide = torch.empty(1024, 1600, 3, 3)  # the transformed filter takes several slices
    assert "winograd" in candidates(torch.empty(1, 1600, 4, 4), wide, None, *plain)


def test_excluded_kernels_are_not_offered_but_direct_always_is():
    from xmem.conv import excluded_kernels

    x, w = torch.randn(1, 8, 6, 6), torch.randn(8, 8, 3, 3)
    plain = ((1, 1), (1, 1), (1, 1), 1)
    with excluded_kernels(["winograd", "nnpack", "nnpack_per_image", "direct"]):
        assert set(candidates(x, w, None, *plain)) == {"direct", "channels_last"}
    assert "winograd" in candidates(x, w, None, *plain)  # context left: offered again
    with pytest.raises(ValueError, match="unknown kernel.*'winograd2'.*known: direct"):
        with excluded_kernels(["winograd2"]):
            pass


def test_1x1_kernels_include_a_matrix_product():
    torch.manual_seed(0)
    weight, bias, x = torch.randn(12, 8, 1, 1), torch.randn(12), torch.randn(3, 8, 7, 9)
    with torch.inference_mode():
        options = candidates(x, weight, bias, (1, 1), (0, 0), (1, 1), 1)
        assert "gemm" in options and "nnpack" not in options
        for name, fn in options.items():
            assert torch.allclose(fn(), F.conv2d(x, weight, bias), atol=1e-5), name


@pytest.mark.parametrize(
    "kwargs",
    [{"stride": 2}, {"dilation": 2, "padding": 2}, {"groups": 2}, {"kernel_size": 5, "padding": 2}],
    ids=["stride2", "dilated", "grouped", "5x5"],
)
def test_other_convs_only_get_layout_choices(kwargs):
    torch.manual_seed(0)
    conv = Conv2d(8, 8, **{"kernel_size": 3, "padding": 1, **kwargs}).eval()
    x = torch.randn(1, 8, 10, 12)
    with torch.inference_mode():
        direct = F.conv2d(
            x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups
        )
        options = candidates(
            x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups
        )
        assert set(options) == {"direct", "channels_last"}
        with fast_convs():
            assert torch.allclose(conv(x), direct, atol=1e-5)


class FakeClock:
    """Time that only advances when a fake kernel 'runs' for its cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def kernel(self, cost: float, calls: list[str], name: str):
        def run() -> str:
            calls.append(name)
            self.now += cost
            return name

        return run


def test_tuner_keeps_the_fastest_measures_once_and_logs_once(caplog):
    clock, calls = FakeClock(), []
    tuner = KernelTuner(clock=clock, min_rounds=2, max_rounds=2)
    kernels = {
        "a": clock.kernel(3.0, calls, "a"),
        "b": clock.kernel(1.0, calls, "b"),
        "c": clock.kernel(2.0, calls, "c"),
    }
    with caplog.at_level("INFO", logger="xmem.kernels"):
        assert tuner.run("shape-1", kernels) == "b"
        assert calls == ["a", "b", "c"] * 2  # interleaved rounds
        calls.clear()
        assert [tuner.run("shape-1", kernels) for _ in range(3)] == ["b"] * 3
        assert calls == ["b"] * 3  # cached: no more measuring
    assert tuner.choices() == {"shape-1": "b"}
    assert tuner.timings("shape-1") == {"a": 3.0, "b": 1.0, "c": 2.0}
    logged = [r.getMessage() for r in caplog.records if r.name == "xmem.kernels"]
    assert len(logged) == 1 and "shape-1" in logged[0] and ": b " in logged[0]


def test_tuner_chooses_per_key_and_keeps_the_minimum_of_noisy_rounds():
    clock, calls = FakeClock(), []
    costs = iter([9.0, 2.0, 1.0, 2.0])  # a: 9 then 1 (one slow round); b: 2 and 2
    tuner = KernelTuner(clock=clock, min_rounds=2, max_rounds=2)

    def noisy() -> str:
        clock.now += next(costs)
        return "a"

    first = tuner.run("k1", {"a": noisy, "b": clock.kernel(2.0, calls, "b")})
    second = tuner.run(
        "k2", {"a": clock.kernel(5.0, calls, "a"), "b": clock.kernel(4.0, calls, "b")}
    )
    assert (first, second) == ("a", "b")
    assert tuner.choices() == {"k1": "a", "k2": "b"}


def test_tuner_measures_cheap_kernels_more_often():
    clock, calls = FakeClock(), []
    tuner = KernelTuner(clock=clock, min_rounds=2, max_rounds=6, cheap_s=1.0)
    tuner.run("cheap", {"a": clock.kernel(0.01, calls, "a"), "b": clock.kernel(0.02, calls, "b")})
    assert len(calls) == 12
    calls.clear()
    tuner.run("dear", {"a": clock.kernel(5.0, calls, "a"), "b": clock.kernel(6.0, calls, "b")})
    assert len(calls) == 4


def test_tuner_by_default_measures_dear_kernels_once_and_cheap_ones_again():
    clock, calls = FakeClock(), []
    tuner = KernelTuner(clock=clock)  # the defaults the app runs with
    tuner.run("dear", {"a": clock.kernel(0.2, calls, "a"), "b": clock.kernel(0.1, calls, "b")})
    assert calls == ["a", "b"]  # one round passed CHEAP_S
    calls.clear()
    tuner.run("cheap", {"a": clock.kernel(1e-3, calls, "a"), "b": clock.kernel(2e-3, calls, "b")})
    assert calls == ["a", "b"] * MAX_ROUNDS


def test_fast_convs_run_the_measured_choice():
    torch.manual_seed(0)
    conv = Conv2d(16, 8, 3, padding=1).eval()
    x = torch.randn(1, 16, 9, 11)
    with torch.inference_mode(), fast_convs():
        out = conv(x)
        chosen = [
            name
            for key, name in TUNER.choices().items()
            if key[2] == tuple(x.shape) and key[3] == tuple(conv.weight.shape)
        ]
        assert len(chosen) == 1
        options = candidates(x, conv.weight, conv.bias, (1, 1), (1, 1), (1, 1), 1)
        assert torch.equal(out, options[chosen[0]]())
        assert torch.allclose(out, F.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-5)


def test_winograd_conv_is_off_outside_its_context_and_under_autograd():
    torch.manual_seed(0)
    conv = Conv2d(8, 8, 3, padding=1)
    x = torch.randn(1, 8, 10, 12)
    with torch.no_grad():
        direct = conv(x)
    with fast_convs():
        with_grad = conv(x)  # autograd on: the direct conv, so training still works
        assert with_grad.requires_grad
        assert torch.equal(with_grad.detach(), direct)
    with torch.no_grad():
        assert torch.equal(conv(x), direct)  # context left: off again


def test_folded_batch_norm_matches_conv_then_bn():
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(6, 10, 3, padding=1, bias=False), torch.nn.BatchNorm2d(10)
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_(1, 0.2)
        bn.bias.normal_(0, 0.2)
    conv.eval(), bn.eval()
    x = torch.randn(2, 6, 9, 11)
    with torch.inference_mode():
        reference = bn(conv(x))
        with fast_convs():
            folded = conv_bn(x, conv, bn)
            assert torch.allclose(folded, reference, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        bn.running_mean.add_(1.0)  # a changed statistic must not reuse the cached fold
        with fast_convs():
            assert torch.allclose(conv_bn(x, conv, bn), bn(conv(x)), rtol=1e-4, atol=1e-5)
    bn.train()  # training-mode BN (batch statistics) is never folded
    with torch.no_grad(), fast_convs():
        assert torch.equal(conv_bn(x, conv, bn), bn(conv(x)))


def test_argmax_channels_matches_argmax_with_ties():
    prob = torch.rand(4, 7, 9)
    prob[2, :3] = prob[1, :3] = prob[:, :3].max(dim=0).values  # ties: first maximum wins
    assert torch.equal(argmax_channels(prob), prob.argmax(dim=0))


# ---------------------------------------------------------------------- precision
def test_emulated_low_precision_is_named_once(monkeypatch, caplog):
    """bf16 asked on a CPU without it in hardware: one warning naming the precision and
    the way out, then silence; native bf16 and fp32 say nothing."""
    from xmem import schedule

    monkeypatch.setattr(schedule, "_warned", set())
    monkeypatch.setitem(schedule._CPU_NATIVE, torch.bfloat16, lambda: False)
    caplog.set_level("WARNING", logger="xmem.schedule")
    assert schedule.warn_if_emulated("bf16", "cpu") is False
    assert schedule.warn_if_emulated("bf16", "cpu") is False
    [record] = caplog.records
    assert "'bf16'" in record.getMessage() and "no native bfloat16" in record.getMessage()
    assert "'fp32' or 'auto'" in record.getMessage()
    caplog.clear()
    assert schedule.warn_if_emulated("fp32", "cpu") and schedule.warn_if_emulated("auto", "cpu")
    monkeypatch.setitem(schedule._CPU_NATIVE, torch.bfloat16, lambda: True)
    monkeypatch.setattr(schedule, "_warned", set())
    assert schedule.warn_if_emulated("bf16", "cpu") is True
    assert caplog.records == []


def test_a_failing_native_probe_counts_as_emulated(monkeypatch):
    from xmem import schedule

    def missing() -> bool:
        raise AttributeError("_is_mkldnn_bf16_supported")  # an older or unusual build

    monkeypatch.setitem(schedule._CPU_NATIVE, torch.bfloat16, missing)
    assert schedule.native(torch.bfloat16, "cpu") is False
    assert schedule.native(None, "cpu") and schedule.native(torch.float32, "cpu")


def test_precision_names_and_what_auto_means():
    from xmem.schedule import Schedule, autocast_dtype

    assert autocast_dtype("auto", "cuda") is torch.float16  # upstream's choice on CUDA
    assert autocast_dtype("auto", "cpu") is None  # fp32 on CPU; bf16 is opt-in
    assert autocast_dtype("fp32", "cuda") is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    assert autocast_dtype("fp16", "cpu") is torch.float16
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("fp8", "cpu")
    cuda, cpu = Schedule.for_device("cuda"), Schedule.for_device("cpu")
    assert (cuda.batch_keys, cuda.channels_last, cuda.sparse_read, cuda.fast_convs) == (
        True,
        True,
        False,
        False,
    )
    assert (cpu.batch_keys, cpu.channels_last, cpu.sparse_read, cpu.fast_convs) == (
        False,
        False,
        True,
        True,
    )
    assert Schedule.for_device("cpu", fast_ops=False).sparse_read is False


def _memory_pair(dtype: torch.dtype, frames: int) -> tuple[MemoryManager, MemoryManager, list]:
    """A dense fp32 reader and a sparse one fed the same memory rounded to `dtype`."""
    from xmem.inference import DEFAULT_CONFIG

    torch.manual_seed(0)
    dense = MemoryManager(DEFAULT_CONFIG, hidden_dim=4, fast=False)
    sparse = MemoryManager(DEFAULT_CONFIG, hidden_dim=4, fast=True)
    queries = []
    for _ in range(frames):  # 10 memory frames of 4x5 trigger a consolidation
        key, s = torch.randn(1, 8, 4, 5).to(dtype), (torch.rand(1, 1, 4, 5) + 1).to(dtype)
        value, sel = torch.randn(1, 2, 6, 4, 5).to(dtype), torch.rand(1, 8, 4, 5).to(dtype)
        dense.add_memory(key.float(), s.float(), value.float(), sel.float())
        with torch.autocast("cpu", dtype=dtype):
            sparse.add_memory(key, s, value, sel)
        queries.append((torch.randn(1, 8, 4, 5).to(dtype), torch.rand(1, 8, 4, 5).to(dtype)))
    return dense, sparse, queries


def test_sparse_memory_read_runs_under_bf16_with_fp32_sums():
    """The CSR readout has no bf16 kernel on CPU (MKL): the read runs in fp32 from the
    bf16 memory, and agrees with a dense fp32 read of the same rounded values."""
    dense, sparse, queries = _memory_pair(torch.bfloat16, frames=8)
    for q, qe in queries[:3]:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            fast = sparse.match_memory(q, qe)
        with torch.inference_mode():
            reference = dense.match_memory(q.float(), qe.float())
        assert fast.dtype == torch.float32
        assert torch.allclose(fast, reference, atol=1e-5), (fast - reference).abs().max()
    # after a consolidation (its prototypes computed under bf16 autocast) it still runs
    _, sparse, queries = _memory_pair(torch.bfloat16, frames=12)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = sparse.match_memory(*queries[0])
    assert sparse.stats.consolidations == 1 and torch.isfinite(out).all()


def test_softmax_and_aggregation_stay_fp32():
    from xmem.memory import full_softmax
    from xmem.network import aggregate

    sim = torch.randn(1, 50, 7).to(torch.bfloat16)
    for out in (topk_softmax(sim, 5), topk_softmax(sim, None), full_softmax(sim)):
        assert out.dtype == torch.float32
        assert torch.allclose(out.sum(dim=1), torch.ones(1, 7), atol=1e-6)
    prob = aggregate(torch.rand(3, 4, 5).to(torch.bfloat16), dim=0)
    assert prob.dtype == torch.float32 and torch.allclose(prob.sum(0), torch.ones(4, 5))


def test_checkpoints_are_the_two_files_of_xmems_release() -> None:
    from serve_xmem import model
    from sly_vos import checkpoints

    declared = checkpoints.declared(model)
    assert [(c.name, c.files, c.default) for c in declared] == [
        ("XMem", ("XMem.pth",), True),
        ("XMem-s012", ("XMem-s012.pth",), False),
    ]
    release = "https://github.com/hkchengrex/XMem/releases/download/v1.0/"
    assert [c.urls for c in declared] == [(release + "XMem.pth",), (release + "XMem-s012.pth",)]
