"""Recipe for ``caption_*.json``: Tag2Text captions made by the OFFICIAL implementation.

Not a test (pytest does not collect it). Needs what CI does not have:

* transformers 4.25.1 (the version the official code was pinned to) ahead of the project's
  transformers on ``sys.path``, e.g. ``pip install --no-deps --target /tmp/t4251 transformers==4.25.1
  tokenizers==0.13.3 huggingface_hub==0.20.3 requests``;
* a transcription of the official ``ram/models/bert.py`` (BertModel, BertLMHeadModel) as one module,
  path in ``$OFFICIAL_RAM`` (xinyu1205/recognize-anything @ 7cb804a8; never committed here);
* ``$BERT_DIR``: a folder with bert-base-uncased ``vocab.txt`` + ``tokenizer_config.json``
  (``{"do_lower_case": true}``), loaded with ``BertTokenizer.from_pretrained`` as the official code does.

Run from the repository root::

    PYTHONPATH=/tmp/t4251 OFFICIAL_RAM=/path/official_ram.py BERT_DIR=/path/bert-base-uncased \\
        .venv/bin/python tests/tagging/golden/make_caption_golden.py [--full] [--only=CASE]

For each case of ``caption_setup.py`` it gives the official modules our deterministic weights (by
key), runs the body of ``Tag2Text.generate`` after tagging (beam 3, max_length 50, min_length 10)
on all ``TAG_STRINGS`` photos as one batch and on each photo alone (must agree on 4.25.1), and
writes the token ids and captions. It also prints how often the beam-search paths that matter
were taken, so that the cases keep covering them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


setup = _load("caption_setup", HERE.parent / "caption_setup.py")
official = _load("official_ram", Path(os.environ["OFFICIAL_RAM"]))

import transformers  # noqa: E402  (after the path set-up above)
from transformers import BertTokenizer  # noqa: E402
from transformers.generation import beam_search as hf_beam  # noqa: E402

assert transformers.__version__ == "4.25.1", transformers.__version__

COUNTS: Counter = Counter()
_orig_process = hf_beam.BeamSearchScorer.process
_orig_add = hf_beam.BeamHypotheses.add


def _process(self, input_ids, next_scores, next_tokens, next_indices, pad_token_id=None, eos_token_id=None, **kw):
    before = self._done.clone()
    k = self.group_size
    for b in range(len(self._beam_hyps)):
        if before[b]:
            continue
        ranks = (next_tokens[b] == eos_token_id).nonzero().flatten().tolist()
        COUNTS["eos in top k (hypothesis added)"] += sum(r < k for r in ranks)
        COUNTS["eos below top k (skipped)"] += sum(r >= k for r in ranks)
    out = _orig_process(self, input_ids, next_scores, next_tokens, next_indices, pad_token_id, eos_token_id, **kw)
    newly = (self._done & ~before).sum().item()
    COUNTS["photo done before max_length"] += newly
    return out


def _add(self, hyp, sum_logprobs, beam_indices=None):
    n = len(self.beams)
    _orig_add(self, hyp, sum_logprobs, beam_indices)
    if n == self.num_beams and len(self.beams) == self.num_beams:
        COUNTS["full hypotheses list: evicted or rejected"] += 1


hf_beam.BeamSearchScorer.process = _process
hf_beam.BeamHypotheses.add = _add


def official_config(case, encoder_width: int):
    cfg = transformers.BertConfig(
        vocab_size=30524,
        hidden_size=case.hidden,
        num_hidden_layers=case.layers,
        num_attention_heads=case.heads,
        intermediate_size=case.intermediate,
        hidden_act="gelu",
        max_position_embeddings=512,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        add_cross_attention=True,
    )
    cfg.encoder_width = encoder_width
    return cfg


def official_modules(case):
    ours = setup.CaptionModel(case)
    weights = setup.case_state_dict(case, ours)
    enc = official.BertModel(official_config(case, case.image_width), add_pooling_layer=False)
    dec = official.BertLMHeadModel(official_config(case, case.hidden))
    for prefix, module in (("tag_encoder.", enc), ("text_decoder.", dec)):
        part = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        result = module.load_state_dict(part, strict=False)
        assert not result.missing_keys and not result.unexpected_keys, result
        module.eval()
    return enc, dec


def official_generate(enc, dec, tokenizer, image_embeds, tag_input, num_beams=3, max_length=50, min_length=10,
                      prompt="a picture of "):
    """The body of the official Tag2Text.generate after tagging (sample=False)."""
    batch = image_embeds.shape[0]
    image_embeds = image_embeds.repeat_interleave(num_beams, dim=0)
    tag_input = [tag for tag in tag_input for _ in range(num_beams)]
    image_atts = torch.ones(image_embeds.size()[:-1], dtype=torch.long)
    tok = tokenizer(tag_input, padding="max_length", truncation=True, max_length=40, return_tensors="pt")
    encoder_input_ids = tok.input_ids
    encoder_input_ids[:, 0] = tokenizer.enc_token_id
    states = enc(encoder_input_ids, attention_mask=tok.attention_mask, encoder_hidden_states=image_embeds,
                 encoder_attention_mask=image_atts, return_dict=True).last_hidden_state
    input_ids = tokenizer([prompt] * batch, return_tensors="pt").input_ids
    input_ids[:, 0] = tokenizer.bos_token_id
    input_ids = input_ids[:, :-1]
    outputs = dec.generate(input_ids=input_ids, max_length=max_length, min_length=min_length, num_beams=num_beams,
                           eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
                           repetition_penalty=1.0, encoder_hidden_states=states, encoder_attention_mask=None)
    captions = [tokenizer.decode(o, skip_special_tokens=True)[len(prompt):] for o in outputs]
    return outputs, captions


def trim(row: list[int]) -> list[int]:
    """Drop the final [SEP] and any [PAD] after it (what our generate_caption_ids returns)."""
    while row and row[-1] == 0:
        row = row[:-1]
    if row and row[-1] == 102:
        row = row[:-1]
    return row


def main() -> None:
    torch.set_num_threads(1)  # the result does not depend on it; 1 thread is faster on a busy machine
    tokenizer = BertTokenizer.from_pretrained(os.environ["BERT_DIR"])
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tokenizer.enc_token_id = tokenizer.additional_special_tokens_ids[0]
    cases = list(setup.TINY_CASES)
    tags = setup.TAG_STRINGS
    if "--full" in sys.argv:
        cases = [setup.FULL_CASE]
        tags = setup.TAG_STRINGS[:2]
    only = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")]
    runs = [(case, case.name, {}) for case in cases]
    if "--full" not in sys.argv:
        by_name = {c.name: c for c in setup.TINY_CASES}
        runs += [(by_name[n], setup.settings_name(n, kw), kw) for n, kw in setup.OTHER_SETTINGS]
    if only:
        runs = [r for r in runs if r[1] in only]
    for case, name, settings in runs:
        COUNTS.clear()
        enc, dec = official_modules(case)
        x = setup.image_embeds(case, len(tags))
        t0 = time.time()
        with torch.no_grad():
            batch_out, batch_caps = official_generate(enc, dec, tokenizer, x, tags, **settings)
            batch_rows = [trim(r) for r in batch_out.tolist()]
            for i in range(len(tags)):
                out, caps = official_generate(enc, dec, tokenizer, x[i : i + 1], tags[i : i + 1], **settings)
                assert trim(out[0].tolist()) == batch_rows[i], (name, i)
                assert caps == batch_caps[i : i + 1]
        record = {
            "case": case.__dict__,
            "settings": settings,
            "made_with": f"official Tag2Text.generate body, transformers {transformers.__version__}",
            "synthetic_recipe_version": setup.RECIPE_VERSION,
            "tags": tags,
            "ids": batch_rows,
            "captions": batch_caps,
        }
        (HERE / f"caption_{name}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(name, f"{time.time() - t0:.1f}s", "lengths", [len(r) for r in batch_rows], dict(COUNTS))

if __name__ == "__main__":
    main()
