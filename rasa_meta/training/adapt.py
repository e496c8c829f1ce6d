"""Adapting a model to a bot's examples, as `rasa train` does: the training half of the model.

The runtime's :class:`~rasa_meta.runtime.model.FewShotIntentModel` predicts, saves and loads;
this module changes its encoder. :func:`adapt` runs the inner loop over the encoder
(``epochs > 0``), measures the held-out in-scope calibration when configured, and then builds
the head and the in-scope estimator from the adapted embeddings
(:meth:`~FewShotIntentModel.fit_embeddings`). Like SetFit's Trainer beside its model, it is
imported at training time only, never by serving.
"""

from __future__ import annotations

import random
from typing import Dict, List, Optional, Sequence

from rasa_meta.runtime.encoder import trainable_state
from rasa_meta.runtime.heads import make_head
from rasa_meta.runtime.in_scope import HeldOutScores
from rasa_meta.runtime.model import FewShotIntentModel
from rasa_meta.runtime.out_of_scope_intent import in_scope_part, out_of_scope_labels
from rasa_meta.training.inner_loop import finetune_encoder


def adapt(
    model: FewShotIntentModel,
    texts: Sequence[str],
    labels: Sequence[str],
    descriptions: Optional[Dict[str, str]] = None,
) -> FewShotIntentModel:
    """Fit ``model`` to the examples: optional inner-loop fine-tuning, then prototypes, the
    refined head and the in-scope calibration. ``descriptions``: intent -> text (see
    :meth:`FewShotIntentModel.fit_embeddings`). Returns ``model``."""
    texts, labels = list(texts), list(labels)
    model.held_out = None
    config = model.config
    if config.epochs > 0:
        if config.oos_calibration == "held_out" and model.in_scope_method() != "off":
            model.held_out = held_out_scores(model, texts, labels, descriptions)
        changed = run_inner_loop(model, texts, labels)
        if changed:  # stored in float16: the inner loop already rounded them to it
            model.delta = {
                k: v.half() for k, v in trainable_state(model.encoder.model, changed).items()
            }
    return model.fit_embeddings(model.embed(texts), labels, texts, descriptions)


def run_inner_loop(model: FewShotIntentModel, texts: List[str], labels: List[str]) -> List[str]:
    """The inner loop over ``model``'s encoder on these examples, with the model's options;
    the names of the parameters it changed."""
    config = model.config
    return finetune_encoder(
        model.encoder,
        texts,
        labels,
        epochs=config.epochs,
        learning_rate=config.finetune_learning_rate,
        train_layers=config.finetune_layers,
        objective=config.finetune_objective,
        init_scale=1.0 / model.temperature,
        seed=config.random_seed,
    )


def held_out_split(labels: Sequence[str], seed: int) -> List[int]:
    """Indices of one example drawn (seeded) from every intent that has two or more."""
    groups: Dict[str, List[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    rng = random.Random(seed)
    return sorted(rng.choice(idx) for _, idx in sorted(groups.items()) if len(idx) >= 2)


def held_out_scores(
    model: FewShotIntentModel,
    texts: List[str],
    labels: List[str],
    descriptions: Optional[Dict[str, str]] = None,
) -> Optional[HeldOutScores]:
    """Adapt a copy of the encoder without one example of each intent (of intents with 2+)
    and score those examples as new messages: the in-scope calibration of the real run (its
    head built as the real one is, intent names included). The encoder's weights are
    restored afterwards. With an out-of-scope intent, only the other intents' examples are
    scored, against the head's in-scope part, as the calibration reads them."""
    held = held_out_split(labels, model.config.random_seed)
    if len(held) < 2:
        return None
    held_set = set(held)
    rest = [i for i in range(len(texts)) if i not in held_set]
    encoder = model.encoder.model
    original = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    try:
        run_inner_loop(model, [texts[i] for i in rest], [labels[i] for i in rest])
        emb = model.embed(texts)
        model.descriptions = {**(model.config.intent_descriptions or {}), **(descriptions or {})}
        named = model.label_embeddings(sorted(set(labels) | set(model.descriptions)))
    finally:
        encoder.load_state_dict(original)
    config = model.config
    head = make_head(config.head, model.temperature).fit(
        emb[rest], [labels[i] for i in rest], named, float(config.label_name_weight))
    head.refine(config.head_steps, config.head_learning_rate)
    head = in_scope_part(head, out_of_scope_labels(head.labels, config.out_of_scope_intent))
    return HeldOutScores.of(head, emb[held], [labels[i] for i in held])
