"""Safe, strict loading of RAM checkpoints and their conversion to safetensors (tiny models, real files)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from phototag.tagging.models.ram import build_model
from phototag.tagging.synthetic import official_checkpoint
from phototag.tagging.weights import (
    WeightsError,
    convert_checkpoint,
    identify,
    load_converted,
    load_pack_model,
    official_key_transform,
    prepare_state,
    read_checkpoint,
    sha256_file,
    write_safetensors,
)

from .ram_cases import tiny_arch, tiny_official_state


def save_official(path, state):
    torch.save(official_checkpoint(state), path)
    return path


@pytest.mark.parametrize("kind", ["ram", "ram_plus", "tag2text"])
def test_convert_then_load_gives_the_same_logits_as_the_checkpoint(kind, tmp_path):
    state = tiny_official_state(kind)
    pth = save_official(tmp_path / f"{kind}.pth", state)
    result = convert_checkpoint(pth, tmp_path / f"{kind}.safetensors", arch=tiny_arch(kind))
    assert result.kind.kind == kind and result.sha256 == sha256_file(result.path)
    assert result.captioning == (kind == "tag2text")  # RAM's caption modules are dropped
    converted, meta = load_converted(result.path)
    assert meta["kind"] == kind
    if kind == "ram":
        assert not any(k.startswith(("tag_encoder.", "text_decoder.")) for k in converted)
    if kind == "tag2text":  # tied tensors stored once, aliases restored on load
        assert json.loads(meta["aliases"])["text_decoder.cls.predictions.decoder.weight"] == \
            "text_decoder.bert.embeddings.word_embeddings.weight"
    reference = build_model(kind, arch=tiny_arch(kind), tagging_only=True)
    reference.load_state_dict({k: v for k, v in official_key_transform(state).items()
                               if k in reference.state_dict()}, strict=True)
    model, info = load_pack_model(result.path, arch=tiny_arch(kind))
    # The conversion must be exact: every tensor the model holds equals the checkpoint's, bit for bit.
    loaded = model.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded[key], value), key
    # The outputs are the same math on the same numbers, but not bit for bit: the pack's tensors are
    # memory-mapped (other alignment), so BLAS/oneDNN may pick other kernels and sum in another order
    # (seen: 1 ulp on AMD EPYC). A seeded input and a tolerance far below any tag threshold's margin.
    x = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    if kind == "tag2text":
        assert model.text_decoder.cls.predictions.decoder.weight is \
            model.text_decoder.bert.embeddings.word_embeddings.weight
        assert model.tag_encoder.encoder.layer[1].intermediate.dense.weight is \
            model.tagging_head.encoder.layer[1].intermediate.dense.weight


def test_truncated_checkpoint_is_reported_as_such(tmp_path):
    pth = save_official(tmp_path / "ram.pth", tiny_official_state("ram_plus"))
    data = pth.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or damaged"):
        read_checkpoint(cut)


def test_a_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "config": Evil()}, path)
    with pytest.raises(WeightsError, match="refused to load") as err:
        read_checkpoint(path)
    assert "system" in str(err.value)  # names what the pickle wanted to call
    assert not marker.exists()


def test_random_pth_is_not_mistaken_for_ram(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, path)
    state = read_checkpoint(path)  # a bare state dict is accepted …
    with pytest.raises(WeightsError, match="not a RAM / RAM\\+\\+ / Tag2Text checkpoint"):
        identify(official_key_transform(state))  # … but identified as foreign
    other = tmp_path / "other.pth"
    torch.save({"epoch": 3, "weights": [1, 2]}, other)
    with pytest.raises(WeightsError, match="holds no state dict"):
        read_checkpoint(other)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(WeightsError, match="not a PyTorch zip checkpoint"):
        read_checkpoint(text)


def test_every_missing_unexpected_and_misshaped_key_is_named():
    state = official_key_transform(tiny_official_state("tag2text"))
    del state["fc.b"]
    del state["visual_encoder.layers.1.blocks.0.mlp.fc1.bias"]
    state["visual_encoder.head.weight"] = torch.zeros(3)
    state["label_embed.weight"] = torch.zeros(3429, 65)
    with pytest.raises(WeightsError) as err:
        prepare_state(state, arch=tiny_arch("tag2text"))
    message = str(err.value)
    for key in ("fc.b", "visual_encoder.layers.1.blocks.0.mlp.fc1.bias", "visual_encoder.head.weight",
                "label_embed.weight (3429, 65) (model (3429, 64))"):
        assert key in message
    assert "2 missing" in message and "1 unexpected" in message and "1 with another shape" in message


def test_official_transforms_drop_35_buffers_rename_vision_multi_and_reject_resized_tables():
    state = tiny_official_state("ram_plus")
    n_buffers = sum(k.endswith(("relative_position_index", "attn_mask")) for k in state)
    old = {k.replace("tagging_head", "vision_multi"): v for k, v in state.items()}
    out = official_key_transform(old)
    assert len(out) == len(state) - n_buffers
    assert not any("vision_multi" in k for k in out) and "tagging_head.encoder.layer.0.output.dense.weight" in out
    key = "visual_encoder.layers.0.blocks.0.attn.relative_position_bias_table"
    state[key] = torch.zeros(169, 1)  # a window-7 table (224 px training)
    with pytest.raises(WeightsError, match="169 rows; the 384-px models need 529"):
        official_key_transform(state)


def test_tied_keys_with_different_values_are_rejected():
    state = tiny_official_state("tag2text")
    key = "tag_encoder.encoder.layer.0.output.dense.weight"
    state[key] = state[key].clone() + 1
    with pytest.raises(WeightsError, match="tie"):
        prepare_state(state, arch=tiny_arch("tag2text"))


def test_full_size_architecture_is_required_unless_told_otherwise():
    with pytest.raises(WeightsError, match="width 16"):
        prepare_state(tiny_official_state("ram"))


def test_checkpoints_saved_without_bert_position_ids_still_load():
    state = tiny_official_state("tag2text")
    del state["tag_encoder.embeddings.position_ids"], state["text_decoder.bert.embeddings.position_ids"]
    prepared, kind, _ = prepare_state(state, arch=tiny_arch("tag2text"))
    assert torch.equal(prepared["text_decoder.bert.embeddings.position_ids"], torch.arange(512)[None])


#: sha256 of the files ``convert_checkpoint`` wrote for ``tiny_official_state(kind)`` (seed 3) with the
#: hand-written Swin encoder (phototag 905b8b0), before the encoder became timm's SwinTransformer
CONVERTED_BEFORE_TIMM_SWIN = {
    "ram": "dee3bf82b62f7ebeabb381823a46f66fb6ef6afe7e7e9a0c0ae4f7a4cff37f31",
    "ram_plus": "97c0bd7dac929ef2064aaa624bc660333c23016166e9037d667f41ddadb3ef7c",
    "tag2text": "93c8d09fded52d00c944ff75d9e59e3d464c569eb7733d9223f529b8c13817b3",
}


@pytest.mark.parametrize("kind", ["ram", "ram_plus", "tag2text"])
def test_converted_files_are_the_bytes_packs_made_before_timm_swin_hold(kind, tmp_path):
    """Converted files keep the official key names and order, so a pack added before the encoder
    became timm's holds exactly what one added now holds — and loads, strictly, into timm's Swin."""
    pth = save_official(tmp_path / f"{kind}.pth", tiny_official_state(kind))
    result = convert_checkpoint(pth, tmp_path / "w.safetensors", arch=tiny_arch(kind))
    assert result.sha256 == CONVERTED_BEFORE_TIMM_SWIN[kind]
    keys = list(load_converted(result.path)[0])
    assert "visual_encoder.layers.0.downsample.reduction.weight" in keys  # official layout on disk
    assert not any(k.startswith("visual_encoder.layers.3.downsample") for k in keys)
    model, _ = load_pack_model(result.path, arch=tiny_arch(kind))
    assert model.visual_encoder.layers[3].downsample.reduction.weight.shape == (128, 256)  # timm's in memory
    assert torch.equal(model.state_dict()["visual_encoder.layers.1.downsample.norm.weight"],
                       tiny_official_state(kind)["visual_encoder.layers.0.downsample.norm.weight"])


def test_a_damaged_converted_file_is_reported_in_the_files_own_key_names(tmp_path):
    pth = save_official(tmp_path / "ram_plus.pth", tiny_official_state("ram_plus"))
    result = convert_checkpoint(pth, tmp_path / "w.safetensors", arch=tiny_arch("ram_plus"))
    state, meta = load_converted(result.path)
    del state["visual_encoder.layers.0.downsample.norm.weight"]  # official name of timm's layers.1.…
    damaged = tmp_path / "damaged.safetensors"
    write_safetensors(damaged, state, meta)
    with pytest.raises(WeightsError) as err:
        load_pack_model(damaged, arch=tiny_arch("ram_plus"))
    assert "1 missing: visual_encoder.layers.0.downsample.norm.weight" in str(err.value)
    assert "layers.1.downsample" not in str(err.value)
