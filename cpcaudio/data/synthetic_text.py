"""Word lists and sentence templates for the synthetic speech corpus.

:func:`make_sentence` draws a grammatical English sentence from a seeded random generator: the same
generator state always gives the same sentence. The vocabulary is chosen to cover every English phone,
including the rarer ones (``zh`` in *measure*, ``oy`` in *voice*, ``th`` in *thin*, ``ng`` in *song*).
"""

from __future__ import annotations

import numpy as np

NOUNS = (
    "apple", "garden", "river", "window", "teacher", "doctor", "kitten", "table", "mountain", "village",
    "letter", "basket", "candle", "engine", "forest", "island", "jacket", "ladder", "market", "needle",
    "orange", "pocket", "rabbit", "saddle", "ticket", "umbrella", "wagon", "fox", "zebra", "bridge",
    "judge", "church", "cheese", "voice", "coin", "boy", "toy", "treasure", "garage", "measure", "vision",
    "thumb", "path", "mouth", "feather", "brother", "mother", "weather", "song", "ring", "king", "wing",
    "ship", "shoe", "fish", "horse", "house", "cloud", "crowd", "owl", "goat", "boat", "road", "stone",
    "bell", "book", "wolf", "hood", "moon", "spoon", "tooth", "juice", "car", "star", "farm", "card",
    "bird", "nurse", "girl", "word", "chair", "bear", "pear", "ear", "deer", "tour", "fire", "tower",
    "hour", "queen", "quilt", "yard", "year", "music", "picture", "question", "kitchen", "pencil",
    "engineer", "computer", "bottle", "puzzle", "whistle", "pebble", "noodle", "turtle", "penguin",
)

ADJECTIVES = (
    "big", "small", "happy", "quiet", "noisy", "bright", "dark", "heavy", "light", "little", "young", "old",
    "green", "purple", "golden", "silver", "yellow", "orange", "thick", "thin", "smooth", "rough", "sharp",
    "gentle", "clever", "lazy", "busy", "early", "late", "warm", "cold", "cheerful", "careful", "strange",
    "pleasant", "ordinary", "enormous", "tiny", "shiny", "wooden", "frozen", "sleepy", "hungry", "thirsty",
    "curious", "famous", "ugly", "beautiful", "usual", "unusual", "loyal", "joyful", "royal", "square",
)

TRANSITIVE_VERBS = (
    "found", "carried", "painted", "opened", "closed", "watched", "pushed", "pulled", "fixed", "washed",
    "bought", "sold", "borrowed", "followed", "chased", "caught", "threw", "dropped", "lifted", "measured",
    "visited", "noticed", "touched", "enjoyed", "avoided", "changed", "judged", "shared", "showed", "taught",
    "heard", "saw", "packed", "cleaned", "counted", "ordered", "wrapped", "hid", "kept", "brought",
)

INTRANSITIVE_VERBS = (
    "laughed", "slept", "waited", "jumped", "danced", "smiled", "shouted", "arrived", "disappeared",
    "listened", "whispered", "hurried", "wandered", "rested", "sang", "ran", "fell", "stood", "sat",
    "returned", "worked", "played", "travelled", "argued", "agreed", "cried", "hesitated", "looked away",
)

ADVERBS = (
    "quickly", "slowly", "quietly", "loudly", "gently", "happily", "carefully", "suddenly", "yesterday",
    "today", "again", "together", "outside", "early", "later", "at noon", "at night", "in the morning",
    "every evening", "once more", "without a word", "with a smile",
)

PREPOSITIONS = (
    "near", "under", "behind", "beside", "above", "below", "inside", "outside", "across", "along", "around",
    "toward", "through", "over", "beyond", "between the trees and", "in front of", "next to",
)

NAMES = (
    "Anna", "Peter", "Maria", "George", "Sophie", "Thomas", "Judith", "Charles", "Oliver", "Grace",
    "Victor", "Zoe", "Yusuf", "Helen", "Isaac", "Ruth", "Walter", "Nora", "Joshua", "Lily", "Martin",
    "Rose", "Frederick", "Beth", "Hugo", "Vera", "Sam", "Claire", "Edgar", "Joy",
)

NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty")

SINGULAR_DETERMINERS = ("the", "a", "this", "that", "every", "one", "my", "our", "their", "his", "her")
PLURAL_DETERMINERS = ("the", "some", "many", "few", "those", "these", "my", "our", "their")

TEMPLATES = (
    "{D} {A} {N} {V} {D} {N} {P} {D} {N}.",
    "{NAME} {V} {D} {A} {N} {ADV}.",
    "{NAME} and {NAME} {I} {P} {D} {A} {N}.",
    "{D} {N} {I} {ADV} after {NAME} {V} {PD} {PL}.",
    "did {NAME} see {D} {A} {N} {P} {D} {N}?",
    "we {V} {NUM} {A} {PL} {P} {D} {N}.",
    "please bring {D} {N} to {NAME} before the {N} is {A}.",
    "when {D} {N} {I}, {PD} {PL} {V} {D} {A} {N}.",
    "{NAME} said that {D} {N} was {A} and {A}.",
    "{PD} {A} {PL} were {P} {D} {N}, so {NAME} {I} {ADV}.",
    "why was {D} {N} so {A}?",
    "{NAME} {V} {D} {N}, and then {NAME} {I}.",
    "{D} {N}.",
)

# Relative weights of the templates: mostly full sentences, now and then a short phrase.
_TEMPLATE_WEIGHTS = np.array([3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1], dtype=np.float64)
_TEMPLATE_WEIGHTS /= _TEMPLATE_WEIGHTS.sum()

_SLOTS = {
    "A": ADJECTIVES,
    "V": TRANSITIVE_VERBS,
    "I": INTRANSITIVE_VERBS,
    "ADV": ADVERBS,
    "P": PREPOSITIONS,
    "NAME": NAMES,
    "NUM": NUMBERS,
    "PD": PLURAL_DETERMINERS,
}


def _plural(noun: str) -> str:
    """English plural of one of :data:`NOUNS` (regular rules plus the few irregular ones in the list)."""
    irregular = {"tooth": "teeth", "wolf": "wolves"}
    if noun in irregular:
        return irregular[noun]
    if noun.endswith(("s", "sh", "ch", "x", "z")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _fix_articles(words: list[str]) -> list[str]:
    """Turn ``a`` into ``an`` before a word that starts with a vowel sound."""
    fixed = list(words)
    for index, word in enumerate(fixed[:-1]):
        following = fixed[index + 1].lower()
        vowel_sound = following[0] in "aeio" or following.startswith(("ugly", "umbrella", "unusual", "hour"))
        if word.lower() == "a" and vowel_sound:
            fixed[index] = "an"
    return fixed


def make_sentence(rng: np.random.Generator) -> str:
    """Draw one sentence from the templates, filling each slot from its word list.

    Args:
        rng: the random generator; each call advances it, and equal states give equal sentences.

    Returns:
        A capitalised English sentence ending in ``.`` or ``?``.
    """
    template = TEMPLATES[int(rng.choice(len(TEMPLATES), p=_TEMPLATE_WEIGHTS))]
    words = []
    for token in template.split(" "):
        stripped = token.strip("{},.?")
        punctuation = token[len(token.rstrip(",.?")) :]
        if not (token.startswith("{") and (stripped in _SLOTS or stripped in ("N", "PL", "D"))):
            words.append(token)
            continue
        if stripped == "N":
            word = NOUNS[int(rng.integers(len(NOUNS)))]
        elif stripped == "PL":
            word = _plural(NOUNS[int(rng.integers(len(NOUNS)))])
        elif stripped == "D":
            word = SINGULAR_DETERMINERS[int(rng.integers(len(SINGULAR_DETERMINERS)))]
        else:
            options = _SLOTS[stripped]
            word = options[int(rng.integers(len(options)))]
        words.append(word + punctuation)
    words = _fix_articles(words)
    sentence = " ".join(words)
    return sentence[0].upper() + sentence[1:]


def vocabulary() -> list[str]:
    """Every word and phrase that :func:`make_sentence` can produce, in a fixed order."""
    items: list[str] = []
    for group in (NOUNS, [_plural(noun) for noun in NOUNS], ADJECTIVES, TRANSITIVE_VERBS, INTRANSITIVE_VERBS,
                  ADVERBS, PREPOSITIONS, NAMES, NUMBERS, SINGULAR_DETERMINERS, PLURAL_DETERMINERS, ("an",)):
        items.extend(group)
    for template in TEMPLATES:
        items.extend(token for token in template.strip(".?").replace(",", "").split(" ") if "{" not in token)
    return items
