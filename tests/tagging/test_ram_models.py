"""RAM / RAM++ / Tag2Text architectures: official key layout, and logits equal to the official code.

The image encoder is timm's ``SwinTransformer``; official keys reach it through
``official_key_transform`` (9 patch-merging keys renamed) and leave it through ``official_order``.

The golden files were made by running a transcription of the official implementation
(xinyu1205/recognize-anything @ 7cb804a8, transformers 4.25.1, timm 0.4.12) on chelsea with the
synthetic state dicts of :mod:`phototag.tagging.synthetic` (seed 1234); see golden/RAM_OFFICIAL.md.
"""

from __future__ import annotations

import hashlib
import json
import zlib

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from phototag.tagging.models.ram import build_model
from phototag.tagging.ram_tagger import preprocess
from phototag.tagging.models.swin import official_order
from phototag.tagging.synthetic import (
    entries_of,
    official_entries,
    read_manifest,
    read_tied,
    synthetic_state_dict,
    tied_groups_of,
)
from phototag.tagging.vocab import ram_vocabulary, tag2text_vocabulary
from phototag.tagging.weights import (
    check_state_dict,
    file_key,
    identify,
    load_strict,
    materialize,
    official_key_transform,
    prepare_state,
)

from .ram_cases import GOLDEN, GOLDEN_SEED, MANIFEST_NAMES, MANIFESTS, RAM_DATA, tiny_arch

KINDS = ["ram", "ram_plus", "tag2text"]
TOL = 1e-4
GOLD = json.loads((GOLDEN / "ram_official.json").read_text(encoding="utf-8"))


def golden(case: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"ram_official_{case}.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def chelsea() -> torch.Tensor:
    return torch.from_numpy(preprocess(Image.fromarray(skimage.data.chelsea()))).unsqueeze(0)


def constant_state_dict(entries, tied) -> dict[str, torch.Tensor]:
    """Manifest-shaped state dict, each tensor filled with a value of its own (cheap at full size)."""
    alias = {k: min(g) for g in tied for k in g}
    made: dict[str, torch.Tensor] = {}
    out = {}
    for i, (key, shape, dtype) in enumerate(entries):
        src = alias.get(key, key)
        if src not in made:
            made[src] = torch.full(shape, (zlib.crc32(src.encode()) % 9973) / 997.0, dtype=dtype) \
                if dtype.is_floating_point else torch.full(shape, i, dtype=dtype)
        out[key] = made[src]
    return out


def manifest(kind: str):
    name = MANIFEST_NAMES[kind]
    return read_manifest(MANIFESTS / f"{name}.tsv"), read_tied(MANIFESTS / f"{name}.tied.tsv")


def vocab_for(kind: str, num_classes: int):
    data = RAM_DATA / "ram" / "data"
    if kind == "tag2text":
        return tag2text_vocabulary(data / "tag2text_ori_tag_list.txt")
    v = ram_vocabulary(data / "ram_tag_list.txt", data / "ram_tag_list_threshold.txt", data / "ram_tag_list_chinese.txt")
    return type(v)(v.names[:num_classes], v.thresholds[:num_classes], v.names_zh[:num_classes])


def test_preprocess_is_bit_identical_to_the_official_transform(chelsea):
    digest = hashlib.sha256(chelsea.numpy().astype("<f4").tobytes()).hexdigest()
    assert digest == GOLD["input"]["sha256_float32"]


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_keys_shapes_and_order_equal_the_manifest_minus_35_buffers(kind):
    entries, _ = manifest(kind)
    dropped = [k for k, _, _ in entries if k.endswith(("relative_position_index", "attn_mask"))]
    assert len(dropped) == 35  # 24 relative_position_index + 11 attn_mask
    with torch.device("meta"):
        model = build_model(kind)
    ours = entries_of(official_order(model.state_dict(), "visual_encoder."))
    assert ours == [e for e in entries if e[0] not in dropped]
    # in memory the encoder is timm's: only its 9 patch-merging keys are named otherwise
    renamed = {k: file_key(k) for k in model.state_dict() if file_key(k) != k}
    assert len(renamed) == 9 and all(".downsample." in k for k in renamed)
    assert "visual_encoder.layers.3.downsample.reduction.weight" in renamed
    assert renamed["visual_encoder.layers.1.downsample.norm.weight"] == "visual_encoder.layers.0.downsample.norm.weight"
    # the dropped ones exist as (non-persistent) buffers, recomputed by the model
    buffers = dict(model.named_buffers())
    assert all(k in buffers for k in dropped)


def test_tied_tensors_are_shared_like_the_official_model():
    model = build_model("tag2text", arch=tiny_arch("tag2text"))
    groups = sorted(sorted(g) for g in tied_groups_of(model.state_dict()))
    _, official = manifest("tag2text")
    assert len(groups) == len(official) == 34
    assert groups == sorted(sorted(g) for g in official)


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_models_match_the_official_logits(kind, chelsea):
    case = f"{kind}_tiny"
    model = build_model(kind, arch=tiny_arch(kind))
    official = synthetic_state_dict(official_entries(model), tied_groups_of(model.state_dict()), GOLDEN_SEED)
    load_strict(model, official_key_transform(official))
    ref = golden(case)
    with torch.no_grad():
        embeds = model.image_embeds(chelsea)
        logits = model.logits_from_embeds(embeds)[0].numpy()
    np.testing.assert_allclose(logits, ref["logits"], atol=TOL, rtol=0)
    assert np.ptp(ref["logits"]) > 0.5  # the classes really differ, so the check means something
    vocab = vocab_for(kind, model.num_classes)
    ids = vocab.selected(torch.sigmoid(torch.from_numpy(logits)).numpy())
    official = GOLD["cases"][case]["tags"]
    assert [vocab.names[i] for i in ids] == ([t.strip() for t in official.split(" | ")] if official else [])
    if kind != "tag2text":
        np.testing.assert_allclose(embeds[0, 0].numpy(), ref["image_embedding"], atol=TOL, rtol=0)
    else:
        ids_t = torch.from_numpy(ref["tag_ids"])[None].repeat(3, 1)
        mask = torch.from_numpy(ref["tag_mask"])[None].repeat(3, 1)
        with torch.no_grad():
            states = model.encode_tags(ids_t, mask, embeds.repeat_interleave(3, 0))
            step, past = model.text_decoder(torch.tensor([[30522, 1037, 3861, 1997]]).repeat(3, 1), states)
        np.testing.assert_allclose(states[0, :, ::4].numpy(), ref["tag_states_every4"], atol=TOL, rtol=0)
        np.testing.assert_allclose(step[0, -1, ::8].numpy(), ref["first_step_logits_every8"], atol=TOL, rtol=0)
        assert len(past) == 2 and past[0][0].shape == (3, 4, 4, 16)


def test_decoder_kv_cache_gives_the_same_logits_as_recomputing():
    model = build_model("tag2text", arch=tiny_arch("tag2text"))
    states = torch.randn(2, 40, 64, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[30522, 1037, 3861, 1997, 2003, 1037], [30522, 1037, 3861, 1997, 4937, 102]])
    with torch.no_grad():
        full, _ = model.text_decoder(ids, states)
        logits, past = model.text_decoder(ids[:, :4], states)
        for t in range(4, 6):
            logits, past = model.text_decoder(ids[:, t : t + 1], states, past_key_values=past)
            torch.testing.assert_close(logits[:, -1], full[:, t], atol=1e-4, rtol=0)
        none_cache = model.text_decoder(ids, states, use_cache=False)[1]
    assert none_cache is None


def test_tagging_head_scores_each_class_independently(chelsea):
    """No self-attention between labels (Query2Label head): a class's logit ignores the others."""
    model = build_model("ram", arch=tiny_arch("ram"))
    with torch.no_grad():
        emb = model.image_embeds(chelsea)
        q = model.label_queries(emb)
        all_classes = model.fc(model.tagging_head.tag_queries(q, emb))[0, :20]
        some = model.fc(model.tagging_head.tag_queries(q[:, 5:9], emb))[0]
    torch.testing.assert_close(some, all_classes[5:9], atol=1e-5, rtol=0)


def test_tagging_only_models_leave_out_the_caption_modules():
    with torch.device("meta"):
        full = build_model("ram")
        lean = build_model("ram", tagging_only=True)
    n_full = sum(p.numel() for p in full.parameters())
    n_lean = sum(p.numel() for p in lean.parameters())
    assert not any(k.startswith(("tag_encoder", "text_decoder")) for k in lean.state_dict())
    assert n_full == 469_148_785  # SPEC §0 (unique parameters)
    assert n_lean == 212_117_045  # visual 195.2 M + head 13.4 M + label_embed 2.3 M + projections (SPEC §2: 212.1 M)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_full_size_manifest_state_dict_loads_strict_into_the_full_model(kind):
    entries, tied = manifest(kind)
    sd = constant_state_dict(entries, tied)
    state = official_key_transform(sd)
    assert len(sd) - len(state) == 35
    kind_info = identify(state)
    assert kind_info.kind == kind and kind_info.has_text == (kind != "ram_plus")
    model = materialize(kind_info, state, tagging_only=False)  # check_state_dict + strict load
    ours = model.state_dict()
    assert set(ours) == set(state)
    for key in ("label_embed", "fc.W", "visual_encoder.layers.2.blocks.17.mlp.fc2.weight",
                "text_decoder.cls.predictions.decoder.weight", "tag_encoder.encoder.layer.1.output.dense.bias"):
        if key in state:
            assert torch.equal(ours[key], state[key])
    if kind != "ram_plus":  # ties survive loading
        assert ours["tag_encoder.encoder.layer.0.crossattention.self.key.weight"].data_ptr() == \
            ours["tagging_head.encoder.layer.0.crossattention.self.key.weight"].data_ptr()
    check_state_dict(model, state)


@pytest.mark.slow
def test_full_size_tag2text_matches_the_official_logits(chelsea):
    entries, tied = manifest("tag2text")
    state, kind, _ = prepare_state(synthetic_state_dict(entries, tied, seed=GOLDEN_SEED), captioning=False)
    assert not any(k.startswith(("tag_encoder.", "text_decoder.")) for k in state)
    model = materialize(kind, state, tagging_only=True)
    with torch.no_grad():
        logits = model(chelsea)[0].numpy()
    ref = golden("tag2text_full")
    np.testing.assert_allclose(logits, ref["logits"], atol=TOL, rtol=0)
    vocab = vocab_for("tag2text", 3429)
    ids = vocab.selected(torch.sigmoid(torch.from_numpy(logits)).numpy())
    assert " | ".join(vocab.names[i] for i in ids) == GOLD["cases"]["tag2text_full"]["tags"]
