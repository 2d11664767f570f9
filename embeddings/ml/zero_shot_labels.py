"""Zero-shot label words of an image from the encoder's ImageNet logits, for guided captioning.

Each ImageNet-1k class is mapped to one plain word a caption would use (``class_words``):

- the 118 dog breeds (indices 151..268, the ``dog.n.01`` subtree of ImageNet-1k) are "dog" and
  the five domestic cats (281..285: tabby, tiger cat, Persian, Siamese, Egyptian cat) are "cat":
  a caption says "a dog", not "a Rhodesian ridgeback";
- any other class is the head noun of its name, i.e. its last word, lower-cased and singular
  ("great white shark" -> "shark", "golf ball" -> "ball", "Egyptian cat" -> "cat");
- ``HEAD_WORDS`` (hand-checked) replaces the few heads that are not what a person would say,
  and ``CLASS_WORDS`` the few whole names whose last word is misleading ("Madagascar cat" is a
  lemur).

A word's confidence is the softmax probability summed over the classes that map to it (all
118 breeds vote for "dog"). ``confident_labels`` keeps the words at or above a threshold,
chosen on dev sets (bench/caption_labels.py), never on single pictures.

``ruled_out`` names the words a caption should not use beside a confident *animal* label: the
other animal words (ImageNet-1k indices 0..397 are all animals) that the classifier gives less
than ``below`` probability. A picture of a cat is then not "a dog playing with a cat".

``word_forms`` gives the surface forms that satisfy a label (singular, plural and the
``SYNONYMS`` group: "bike" is satisfied by "bicycle"), used as one disjunctive constraint by
``embeddings.ml.constrained_beam`` and by the label hit rate. Pure numpy; no Django.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import inflection
import numpy as np

__all__ = ["CLASS_WORDS", "HEAD_WORDS", "SYNONYMS", "Label", "class_words", "confident_labels",
           "head_word", "ruled_out", "word_forms", "word_probabilities"]

DOG_CLASSES = range(151, 269)  # ImageNet-1k: every dog breed (WordNet dog.n.01 subtree)
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat
ANIMAL_CLASSES = range(0, 398)  # ImageNet-1k: tench .. puffer are all animals
# Animal kinds a caption names by the group word; the ranges are ImageNet-1k's own blocks.
GROUP_WORDS: dict[str, tuple[range, ...]] = {
    "bird": (range(7, 25), range(80, 101), range(127, 147)),
    "fish": (range(0, 7), range(389, 398)),
    "dog": (DOG_CLASSES,),
    "cat": (CAT_CLASSES,),
}

# Whole class names whose last word misleads (checked by hand against the class list).
CLASS_WORDS: dict[str, str] = {
    "Madagascar cat": "lemur",
    "African hunting dog": "dog",
    "hotdog": "hotdog",
    "tiger shark": "shark",
    "sea lion": "seal",
    "Band Aid": "bandage",
    "ballplayer": "player",
    "maillot": "swimsuit",
    "tank suit": "swimsuit",
    "mortarboard": "hat",
    "cowboy hat": "hat",
    "sombrero": "hat",
    "racer": "car",
    "sports car": "car",
    "beach wagon": "car",
    "minivan": "van",
    "jinrikisha": "rickshaw",
    "tabby": "cat",
    "tusker": "elephant",
    "mountain bike": "bike",
    "bicycle-built-for-two": "bicycle",
    "airliner": "plane",
    "warplane": "plane",
    "web site": "website",
}

# Head nouns that a caption would say otherwise (checked by hand).
HEAD_WORDS: dict[str, str] = {
    "retriever": "dog",
    "terrier": "dog",
    "spaniel": "dog",
    "hound": "dog",
    "setter": "dog",
    "poodle": "dog",
    "wolfhound": "dog",
    "bullterrier": "dog",
    "sheepdog": "dog",
    "pinscher": "dog",
    "schnauzer": "dog",
    "mastiff": "dog",
    "bulldog": "dog",
    "husky": "dog",
    "collie": "dog",
    "shepherd": "dog",
    "tench": "fish",
    "goldfish": "fish",
    "coho": "fish",
    "gar": "fish",
    "sturgeon": "fish",
    "barracouta": "fish",
    "eel": "fish",
    "puffer": "fish",
    "jellyfish": "jellyfish",
    "hen": "chicken",
    "cock": "rooster",
    "ox": "cow",
    "tom": "cat",
    "maillot": "swimsuit",
    "jersey": "shirt",
    "sweatshirt": "sweatshirt",
}

# Small groups of words that name the same thing in a caption (checked by hand).
SYNONYMS: tuple[frozenset[str], ...] = (
    frozenset({"bike", "bicycle"}),
    frozenset({"plane", "airplane", "aeroplane", "jet", "aircraft"}),
    frozenset({"car", "automobile"}),
    frozenset({"dog", "puppy"}),
    frozenset({"cat", "kitten", "kitty"}),
    frozenset({"motorcycle", "motorbike"}),
    frozenset({"cup", "mug"}),
    frozenset({"sofa", "couch"}),
    frozenset({"phone", "telephone", "cellphone"}),
    frozenset({"tv", "television"}),
    frozenset({"boat", "ship"}),
    frozenset({"hat", "cap"}),
)


@dataclass(frozen=True)
class Label:
    word: str  # a plain, lower-case, single word
    score: float  # summed softmax probability of its classes


def _singular(word: str) -> str:
    """``inflection.singularize``, except for singular nouns it would cut ("abacus", "glass")."""
    if word.endswith(("us", "ss", "is")):
        return word
    return str(inflection.singularize(word))


def head_word(name: str) -> str:
    """The plain word of a class name, without the index rules: overrides, then the last word."""
    if name in CLASS_WORDS:
        return CLASS_WORDS[name]
    last = name.replace("-", " ").split()[-1].lower()
    last = HEAD_WORDS.get(last, last)
    return _singular(last)


def class_words(names: Sequence[str]) -> list[str]:
    """One plain word per ImageNet class (index rules for dogs and cats, then ``head_word``)."""
    out = []
    for i, name in enumerate(names):
        if len(names) == 1000 and i in DOG_CLASSES and name not in CLASS_WORDS:
            out.append("dog")
        elif len(names) == 1000 and i in CAT_CLASSES:
            out.append("cat")
        else:
            out.append(head_word(name))
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def word_probabilities(logits: np.ndarray, words: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(distinct words, (N, W) summed softmax probability of each word's classes)."""
    logits = np.atleast_2d(np.asarray(logits))
    if logits.shape[-1] != len(words):
        raise ValueError(f"{logits.shape[-1]} logits per image but {len(words)} class words")
    vocab = sorted(set(words))
    index = {w: i for i, w in enumerate(vocab)}
    member = np.zeros((len(words), len(vocab)))
    member[np.arange(len(words)), [index[w] for w in words]] = 1.0
    return vocab, _softmax(logits) @ member


def confident_labels(logits: np.ndarray, words: Sequence[str], *, threshold: float,
                     max_labels: int = 1) -> list[list[Label]]:
    """Per image of ``logits`` (N, C): up to ``max_labels`` words whose summed class probability
    is >= ``threshold``, most probable first. ``words`` has one word per class."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    vocab, word_probs = word_probabilities(logits, words)
    out = []
    for row in word_probs:
        top = np.argsort(-row, kind="stable")[:max_labels]
        out.append([Label(vocab[j], float(row[j])) for j in top if row[j] >= threshold])
    return out


def ruled_out(logits: np.ndarray, words: Sequence[str], labels: Sequence[Sequence[str]], *,
              below: float, unlabelled: bool = False) -> list[list[str]]:
    """Per image: the animal words (class words of animal classes and the ``GROUP_WORDS``) other
    than its labels' with probability < ``below``, when one of its labels is an animal word
    (module doc), or, with ``unlabelled``, also when none is (a picture the classifier sees no
    animal in is never captioned with one it rules out); [] otherwise."""
    animal = {w for i, w in enumerate(words) if i in ANIMAL_CLASSES} - {
        w for i, w in enumerate(words) if i not in ANIMAL_CLASSES}  # words of animal classes only
    vocab, word_probs = word_probabilities(logits, words)
    probs = _softmax(np.atleast_2d(np.asarray(logits)))  # (N, C)
    groups = {g: [i for r in ranges for i in r] for g, ranges in GROUP_WORDS.items()} if len(words) == 1000 else {}
    kin = {w: {g for g, idx in groups.items() if any(words[i] == w for i in idx)} for w in animal}
    out: list[list[str]] = []
    for row, p_row, mine in zip(word_probs, probs, labels):
        if not unlabelled and not (animal | set(groups)) & set(mine):
            out.append([])
            continue
        keep = set(mine) | {g for w in mine for g in kin.get(w, ())}
        banned = [w for w, p in zip(vocab, row) if w in animal and w not in keep and p < below]
        banned += [g for g, idx in groups.items() if g not in keep and g not in banned and p_row[idx].sum() < below]
        out.append(sorted(banned))
    return out


def word_forms(word: str) -> frozenset[str]:
    """Surface forms that name ``word``: itself, singular, plural and its synonym group's."""
    base = {word, _singular(word)}
    for group in SYNONYMS:
        if base & group:
            base |= group
    return frozenset(base | {str(inflection.pluralize(w)) for w in base})
