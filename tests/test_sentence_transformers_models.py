"""sentence-transformers models embed as sentence-transformers embeds them (pooling mode, dense
layers, normalisation, prompts), fine-tune and save like any encoder; the shipped encoder
embeds as before (to float tolerance: the recorded file was made on another machine)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from rasa_meta.runtime.encoder import (
    SentenceEncoder,
    _st_features,
    is_sentence_transformers_model,
    read_metadata,
    resolve_prompt,
    save_checkpoint,
    set_trainable_layers,
)
from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel
from rasa_meta.training.adapt import adapt
from tests.conftest import REPO, toy_corpus

try:  # sentence-transformers 5.x; older versions only have the second path
    from sentence_transformers.sentence_transformer.modules import (
        Dense,
        Normalize,
        Pooling,
        Transformer,
    )
except ImportError:  # pragma: no cover
    from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

TEXTS = ["hello there", "where is my order", "i want a refund for the broken headphones",
         "x", "track my package please", "good morning to you"]
PROMPTS = {"query": "query: ", "classification": "classify this intent: "}


def _build(base: Path, out: Path, pooling: str, normalize: bool = False,
           prompts: Dict[str, str] = None, default: str = None, dense: bool = False,
           include_prompt: bool = True) -> Path:
    transformer = Transformer(str(base))
    pool = Pooling(32, pooling, include_prompt=include_prompt)
    modules: List[torch.nn.Module] = [transformer, pool]
    if dense:
        torch.manual_seed(3)
        modules.append(Dense(32, 16))
    if normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, prompts=prompts, default_prompt_name=default,
                                device="cpu")
    model.save(str(out))
    return out


@pytest.fixture(scope="module")
def st_models(tiny_encoder_dir, tmp_path_factory) -> Dict[str, Path]:
    """Tiny sentence-transformers models over the tiny random BERT, one per kind."""
    root = tmp_path_factory.mktemp("st-models")
    return {
        "cls": _build(tiny_encoder_dir, root / "cls", "cls"),
        "mean": _build(tiny_encoder_dir, root / "mean", "mean", normalize=True),
        "max-dense": _build(tiny_encoder_dir, root / "max-dense", "max", dense=True),
        "lasttoken": _build(tiny_encoder_dir, root / "lasttoken", "lasttoken"),
        "prompt": _build(tiny_encoder_dir, root / "prompt", "mean", prompts=PROMPTS,
                         default="classification"),
        "prompt-excluded": _build(tiny_encoder_dir, root / "prompt-excluded", "mean",
                                  prompts=PROMPTS, default="query", include_prompt=False),
        "prompts-no-default": _build(tiny_encoder_dir, root / "prompts-no-default", "mean",
                                     prompts=PROMPTS),
    }


def reference(path: Path, **kwargs) -> torch.Tensor:
    """What sentence-transformers itself gives, unit length."""
    model = SentenceTransformer(str(path), device="cpu")
    return model.encode(TEXTS, normalize_embeddings=True, convert_to_tensor=True, **kwargs)


@pytest.mark.parametrize(
    "kind", ["cls", "mean", "max-dense", "lasttoken", "prompt", "prompt-excluded"]
)
def test_embeddings_match_sentence_transformers(st_models, kind):
    ours = SentenceEncoder.from_pretrained(str(st_models[kind]))
    assert ours.pipeline is not None
    emb = ours.encode(TEXTS, batch_size=4)
    expected = reference(st_models[kind])
    assert emb.shape == expected.shape == (len(TEXTS), 16 if kind == "max-dense" else 32)
    assert ours.dim == emb.shape[1]
    assert torch.allclose(emb, expected, atol=1e-5)
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)


def test_pooling_modes_really_differ(st_models, tiny_encoder_dir):
    """The comparison above has teeth: CLS and mean pooling of one transformer disagree, and a
    plain Hugging Face directory is mean-pooled."""
    cls = SentenceEncoder.from_pretrained(str(st_models["cls"])).encode(TEXTS)
    mean = SentenceEncoder.from_pretrained(str(st_models["mean"])).encode(TEXTS)
    plain = SentenceEncoder.from_pretrained(str(tiny_encoder_dir))
    assert plain.pipeline is None and not is_sentence_transformers_model(str(tiny_encoder_dir))
    assert not torch.allclose(cls, mean, atol=1e-3)
    assert torch.allclose(plain.encode(TEXTS), mean, atol=1e-5)


def test_prompt_default_named_literal_and_none(st_models):
    path = st_models["prompt"]
    assert SentenceEncoder.from_pretrained(str(path)).prompt == PROMPTS["classification"]
    named = SentenceEncoder.from_pretrained(str(path), prompt="query")
    assert named.prompt == "query: "
    assert torch.allclose(named.encode(TEXTS), reference(path, prompt_name="query"), atol=1e-5)
    literal = SentenceEncoder.from_pretrained(str(path), prompt="intent: ")
    assert torch.allclose(literal.encode(TEXTS), reference(path, prompt="intent: "), atol=1e-5)
    none = SentenceEncoder.from_pretrained(str(path), prompt="")
    assert none.prompt == ""
    assert torch.allclose(none.encode(TEXTS), reference(path, prompt=""), atol=1e-5)
    assert not torch.allclose(none.encode(TEXTS), named.encode(TEXTS), atol=1e-3)


def test_prompts_without_a_default_are_named_in_a_warning(st_models, caplog):
    with caplog.at_level("WARNING", logger="rasa_meta.runtime.encoder"):
        encoder = SentenceEncoder.from_pretrained(str(st_models["prompts-no-default"]))
    assert encoder.prompt == ""
    assert "['classification', 'query']" in caplog.text and "encoder_prompt" in caplog.text


def test_resolve_prompt_order():
    assert resolve_prompt(None, PROMPTS, None) == ""
    assert resolve_prompt(None, PROMPTS, "query") == "query: "
    assert resolve_prompt(None, PROMPTS, "query", recorded="meta: ") == "meta: "
    assert resolve_prompt("classification", PROMPTS, "query", recorded="x") == PROMPTS[
        "classification"]
    assert resolve_prompt("my prefix: ", PROMPTS, "query") == "my prefix: "
    assert resolve_prompt("", PROMPTS, "query") == ""


def test_features_without_preprocess_as_older_versions_make_them(st_models):
    """sentence-transformers before `preprocess`: the prompt is prepended and its length (less
    the final separator) passed on, as their encode() did."""
    real = SentenceTransformer(str(st_models["prompt-excluded"]), device="cpu")

    class Legacy:
        def __getitem__(self, i):
            return real[i]

        def tokenize(self, texts):
            return real.preprocess(texts)

    new = _st_features(real, TEXTS, "query: ", 128)
    old = _st_features(Legacy(), TEXTS, "query: ", 128)
    assert torch.equal(old["input_ids"], new["input_ids"])
    assert old["prompt_length"] == new["prompt_length"] > 0


def test_full_checkpoint_keeps_pooling_and_prompt(st_models, tmp_path):
    encoder = SentenceEncoder.from_pretrained(str(st_models["cls"]), prompt="query: ")
    with torch.no_grad():
        next(encoder.model.parameters()).add_(0.1)
    out = save_checkpoint(encoder, tmp_path / "full", {"note": "cls"})
    assert read_metadata(out)["format"] == "full" and read_metadata(out)["prompt"] == "query: "
    reloaded = SentenceEncoder.from_pretrained(str(out))
    assert reloaded.pipeline is not None and reloaded.prompt == "query: "
    assert torch.allclose(reloaded.encode(TEXTS), encoder.encode(TEXTS), atol=1e-5)


def test_delta_checkpoint_over_a_sentence_transformers_base(st_models, tmp_path):
    base = str(st_models["cls"])
    encoder = SentenceEncoder.from_pretrained(base)
    names = set_trainable_layers(encoder.model, 1)
    with torch.no_grad():
        for name, param in encoder.model.named_parameters():
            if name in names:
                param.add_(0.5)
    out = save_checkpoint(encoder, tmp_path / "delta", {"base_model": base}, names)
    reloaded = SentenceEncoder.from_pretrained(str(out))
    assert reloaded.pipeline is not None
    assert torch.allclose(reloaded.encode(TEXTS), encoder.encode(TEXTS), atol=1e-2)
    assert not torch.allclose(
        reloaded.encode(TEXTS), SentenceEncoder.from_pretrained(base).encode(TEXTS), atol=1e-3
    )


def test_inner_loop_fine_tunes_a_cls_model_and_the_saved_model_predicts_the_same(
    st_models, tmp_path
):
    texts, labels = toy_corpus()
    config = FewShotConfig(encoder=str(st_models["cls"]), encoder_prompt="query: ", epochs=1,
                           device="cpu", out_of_scope_detection=False)
    model = FewShotIntentModel(config)
    before = model.encoder.encode(texts)
    adapt(model, texts, labels)
    assert model.delta and model.encoder.prompt == "query: "
    assert not torch.allclose(model.encoder.encode(texts), before, atol=1e-4)
    model.save(tmp_path / "model")
    loaded = FewShotIntentModel.load(tmp_path / "model")
    assert loaded.encoder.prompt == "query: " and loaded.encoder.pipeline is not None
    probs, _, _ = model.predict(texts)
    probs_loaded, _, _ = loaded.predict(texts)
    assert torch.allclose(probs, probs_loaded, atol=1e-5)


def test_shipped_encoder_embeds_as_recorded():
    """The default encoder (a delta over the bundled all-MiniLM-L6-v2, a sentence-transformers
    model) and its base give the embeddings recorded before sentence-transformers models were
    loaded through that library. The file was written on another CPU, whose float kernels round
    differently in the last bits (1.8e-7 seen), so the comparison has a tolerance far below
    anything that changes a prediction (cosine similarities differ by < 1e-5)."""
    recorded = load_file(str(REPO / "tests" / "data" / "shipped_encoder_embeddings.safetensors"))
    texts = ["hello there", "  where is my order?  ",
             "I want a refund for the broken headphones I bought last week", "x", "",
             "été café naïve", "UPPER case TEXT!!", "how do I top up my card with apple pay " * 30]
    for name in ("default", "minilm"):
        encoder = SentenceEncoder.from_pretrained(name)
        assert encoder.pipeline is not None and encoder.prompt == ""
        torch.testing.assert_close(encoder.encode(texts, batch_size=3), recorded[name],
                                   atol=1e-5, rtol=0, msg=name)


def test_copied_model_directory_is_found_as_sentence_transformers(st_models, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(st_models["cls"], copy)
    assert is_sentence_transformers_model(str(copy))
    assert not is_sentence_transformers_model(str(tmp_path / "missing"))
