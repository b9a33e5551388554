"""`model=timm`: any timm model built by timm for the data set's channels and classes, the stem's stride for small
images, pretrained weights through timm's own loading (a local file offline, one line without it), and three mobile
families through the techniques and formats: an ok row whose file runs, or one line that says why not."""

from __future__ import annotations

import copy
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from conftest import fast_host, tiny_cfg
from timm.layers import BatchNormAct2d
from torch.ao.nn.intrinsic.qat import ConvBn2d
from torch.ao.quantization import disable_observer
from torch.ao.quantization.quantize_fx import prepare_qat_fx

from compress import pipeline
from compress.config import build
from compress.errors import UserError
from compress.models.timm_hub import split_norm_act
from compress.results import fail
from compress.techniques.torch_ao import qat_qconfig_mapping


def test_timm_builds_it_for_the_data_sets_channels_and_classes_with_a_stride_1_stem_below_64_px(make_cfg):
    cfg = make_cfg("model=timm", "model.name=mobilenetv3_small_050", "dataset=mnist5k")
    model = build(cfg.model).eval()
    assert model.conv_stem.in_channels == 1 and model.conv_stem.stride == (1, 1)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10) and cfg.model.name == "mobilenetv3_small_050"
    large = build(make_cfg("model=timm", "dataset=fake", "dataset.input_shape=[3,96,96]").model)
    assert large.conv_stem.stride == (2, 2)  # timm's own stride from 64 px up
    fixed = build(make_cfg("model=timm", "model.stem_stride=2", "dataset=mnist5k").model)
    assert fixed.conv_stem.stride == (2, 2)


def test_a_re_parameterisable_stem_gets_its_stride_on_every_branch(make_cfg):
    model = build(make_cfg("model=timm", "model.name=repvit_m0_9", "dataset=fake").model).eval()
    assert model.stem.conv1.c.stride == (1, 1) and model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_norm_act_layers_become_plain_batch_norms_whose_mode_survives_int8_training_preparation():
    torch.manual_seed(0)
    timms = timm.create_model("mobilenetv3_small_050", num_classes=10).eval()
    split = copy.deepcopy(timms)
    split_norm_act(split)
    x = torch.randn(4, 3, 64, 64)
    assert not any(isinstance(m, BatchNormAct2d) for m in split.modules())
    assert torch.allclose(split(x), timms(x), atol=1e-5)  # the same function of the same weights
    prepared = prepare_qat_fx(split.train(), qat_qconfig_mapping("x86"), example_inputs=(x[:1],))
    prepared(x)  # the ranges observed once, then fixed: the outputs below depend on the normalisation alone
    prepared.eval().apply(disable_observer)
    assert any(isinstance(m, ConvBn2d) for m in prepared.modules())  # batch norm fused into its convolution
    assert prepared(x).abs().max() > 0  # not all quantized to zero
    assert torch.allclose(prepared(x)[:1], prepared(x[:1]), atol=1e-4)  # running statistics, not the batch's


def test_an_unknown_name_is_one_line(make_cfg):
    with pytest.raises(UserError, match="unknown timm model 'mobilenet_v9'; see timm.list_models"):
        build(make_cfg("model=timm", "model.name=mobilenet_v9").model)


def test_a_weight_file_loads_through_timms_own_code_for_other_channels_and_classes(make_cfg, tmp_path):
    torch.manual_seed(3)
    saved = timm.create_model("mobilenetv3_small_050").state_dict()  # RGB, 1000 ImageNet classes
    torch.save(saved, tmp_path / "weights.pth")
    weights = f"model.pretrained_file={tmp_path / 'weights.pth'}"
    gray = build(make_cfg("model=timm", "model.name=mobilenetv3_small_050", weights, "dataset=mnist5k").model)
    assert torch.equal(gray.blocks[1][0].conv_pw.weight, saved["blocks.1.0.conv_pw.weight"])
    assert torch.allclose(gray.conv_stem.weight, saved["conv_stem.weight"].sum(1, keepdim=True))  # timm's adaptation
    assert gray.classifier.out_features == 10


def test_pretrained_without_network_or_cache_names_where_the_weights_are(make_cfg, monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    cfg = make_cfg("model=timm", "model.name=mobilenetv3_small_050", "model.pretrained=true")
    with pytest.raises(UserError, match="without network, download them from "
                       "https://huggingface.co/timm/mobilenetv3_small_050.lamb_in1k elsewhere and pass "
                       "model.pretrained_file=PATH"):  # fmt: skip
        build(cfg.model)


# Three mobile families × what applies to them and what does not, in both formats (measured on the whole matrix of
# 5 families × 17 techniques: README, Models). None: an ok row; else the start of its one-line error.
CASES = {
    ("mobilenetv3_small_050", "prune_channel", "ptl"): None,
    ("mobilenetv3_small_050", "quant_static", "pte"): None,
    ("ghostnet_050", "quant_dynamic", "ptl"): None,
    ("ghostnet_050", "prune_channel", "pte"): None,
    ("ghostnet_050", "prune_slim", "ptl"): "UserError: GhostNet cannot be channel-pruned",  # slices of concatenations
    ("mobilevit_xxs", "svd", "ptl"): None,
    ("mobilevit_xxs", "quant_static", "pte"): None,  # PT2E captures what FX cannot
    ("mobilevit_xxs", "quant_static", "ptl"): "UserError: ByobNet cannot be FX-traced for int8 quantization",
    ("mobilevit_xxs", "prune_channel", "ptl"): "UserError: ByobNet cannot be channel-pruned",  # attention reshapes
}


@pytest.mark.slow
@pytest.mark.parametrize(("family", "technique", "fmt"), list(CASES))
def test_mobile_families_are_ok_rows_whose_files_run_or_one_line_that_says_why_not(make_cfg, family, technique, fmt):
    shape = "dataset.input_shape=[3,32,32]"
    cfg = tiny_cfg(make_cfg, "timm", technique, f"model.name={family}", f"export={fmt}", shape)
    row: dict = {"status": "failed"}
    try:
        pipeline.run_variant(cfg, fast_host(), row)
    except Exception as exc:  # noqa: BLE001 — what the CLI does with it
        fail(row, exc)
    expected = CASES[family, technique, fmt]
    if expected:
        assert row["status"] == "failed" and row["error"].startswith(expected) and "\n" not in row["error"]
        return
    assert row["status"] == "ok", row["error"]
    assert Path(row["artifact"]).stat().st_size == row["size_bytes"] and row["latency_ms_p50"] > 0
    assert build(cfg.export).load(Path(row["artifact"]))(torch.randn(1, 3, 32, 32)).shape == (1, 10)
