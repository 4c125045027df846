"""A built-in generator of simple children's stories, so training works offline with no download."""

from __future__ import annotations

import random
from collections.abc import Iterator

from datasets import Dataset

NAMES = [
    ("Lily", "she"),
    ("Tom", "he"),
    ("Mia", "she"),
    ("Ben", "he"),
    ("Sue", "she"),
    ("Max", "he"),
    ("Anna", "she"),
    ("Sam", "he"),
    ("Lucy", "she"),
    ("Tim", "he"),
    ("Zoe", "she"),
    ("Jack", "he"),
    ("Emma", "she"),
    ("Leo", "he"),
    ("Ella", "she"),
    ("Finn", "he"),
    ("Rosa", "she"),
    ("Omar", "he"),
    ("Nina", "she"),
    ("Kai", "he"),
]
ANIMALS = [
    ("a little dog", "Spot"),
    ("a small cat", "Mittens"),
    ("a fluffy bunny", "Hop"),
    ("a tiny bird", "Tweet"),
    ("a big bear", "Bruno"),
    ("a slow turtle", "Shelly"),
    ("a happy duck", "Quack"),
    ("a brave mouse", "Pip"),
    ("a kind cow", "Daisy"),
    ("a silly frog", "Ribbit"),
    ("a red fox", "Rusty"),
    ("a gentle horse", "Star"),
]
PLACES = [
    "the park",
    "the forest",
    "the beach",
    "the garden",
    "the farm",
    "the lake",
    "the big hill",
    "the school",
    "the zoo",
    "the market",
    "the old barn",
    "the river",
    "the playground",
    "the library",
    "the meadow",
]
OBJECTS = [
    ("a red ball", "ball"),
    ("a shiny stone", "stone"),
    ("a blue kite", "kite"),
    ("a toy car", "car"),
    ("a big box", "box"),
    ("a soft teddy", "teddy"),
    ("a yellow boat", "boat"),
    ("a funny hat", "hat"),
    ("a magic key", "key"),
    ("a little drum", "drum"),
    ("a green leaf", "leaf"),
    ("a pretty shell", "shell"),
    ("a sweet apple", "apple"),
    ("a picture book", "book"),
    ("a pink balloon", "balloon"),
    ("a wooden spoon", "spoon"),
]
FEELINGS = ["happy", "sad", "scared", "excited", "proud", "angry", "surprised", "tired", "curious", "worried"]
WEATHER = ["the sun was warm", "it was a rainy day", "the wind was strong", "the sky was blue", "snow was falling"]
ADJECTIVES = ["bright", "quiet", "sunny", "cold", "windy", "lovely", "busy", "calm"]
LESSONS = [
    "sharing makes everyone happy",
    "it is good to say sorry",
    "being brave helps friends",
    "it is important to be careful",
    "friends help each other",
    "trying again is the way to learn",
    "being kind is the best thing",
    "telling the truth is right",
]


def _story(rng: random.Random) -> str:
    (hero, pronoun), (friend, fpronoun) = rng.sample(NAMES, 2)
    poss = "her" if pronoun == "she" else "his"
    fposs = "her" if fpronoun == "she" else "his"
    animal, pet = rng.choice(ANIMALS)
    place, place2 = rng.sample(PLACES, 2)
    (obj, obj_word), (obj2, obj2_word) = rng.sample(OBJECTS, 2)
    feeling = rng.choice(FEELINGS)
    opening = rng.choice(
        [
            f"Once upon a time, there was a little {rng.choice(['girl', 'boy', 'kid'])} named {hero}.",
            f"One {rng.choice(ADJECTIVES)} day, {hero} went to {place}.",
            f"{hero} lived in a small house near {place}.",
            f"Once there was {animal} named {pet}.",
        ]
    )
    setting = f"{rng.choice(WEATHER).capitalize()}, and {hero} wanted to play at {place}."
    arc = rng.randrange(5)
    if arc == 0:  # losing and finding
        middle = [
            f"{hero} had {obj}. {pronoun.capitalize()} loved {poss} {obj_word} very much.",
            f"But one day, the {obj_word} was gone! {hero} felt {rng.choice(['sad', 'worried', 'scared'])}.",
            f'"Where is my {obj_word}?" {pronoun} asked.',
            f"{friend} came to help. They looked under the trees and behind the rocks at {place}.",
            f"At last, {animal} named {pet} ran up with the {obj_word} in its mouth.",
            f'"Thank you, {pet}!" said {hero}. Because {pet} found it, {hero} gave {pet} a big hug.',
        ]
    elif arc == 1:  # sharing
        middle = [
            f"{hero} had {obj} and {friend} had {obj2}.",
            f'{friend} said, "Can I play with your {obj_word}?"',
            f'At first {hero} said, "No, it is mine!" and {friend} felt sad.',
            f"Then {hero} saw that {friend} was alone, so {pronoun} shared the {obj_word}.",
            f"{friend} shared the {obj2_word} too, and they played together all day at {place}.",
            f"They were very {rng.choice(['happy', 'proud', 'glad'])}.",
        ]
    elif arc == 2:  # a small danger and a rescue
        middle = [
            f"At {place}, {hero} saw {animal} stuck in a {rng.choice(['tree', 'hole', 'bush', 'fence'])}.",
            f"The animal was {rng.choice(['scared', 'crying', 'cold'])}. {hero} wanted to help.",
            f'"Don\'t worry, little one," said {hero}. "I will help you."',
            f"{pronoun.capitalize()} used {obj} to reach it, and slowly pulled it out.",
            f"The animal was free! It licked {hero}'s hand, and {hero} felt {rng.choice(['proud', 'happy'])}.",
            f"From that day, {pet} followed {hero} everywhere.",
        ]
    elif arc == 3:  # a mistake and an apology
        middle = [
            f"{hero} and {friend} were playing with {obj2} near {place}.",
            f"{hero} threw it too hard, and it broke {friend}'s {obj_word}.",
            f"{friend} was {rng.choice(['sad', 'angry', 'upset'])} and started to cry.",
            f'{hero} felt bad. "I am sorry," {pronoun} said. "I will fix it."',
            f"{hero} asked {poss} mom for help, and together they fixed the {obj_word}.",
            f'{friend} smiled. "Thank you, {hero}. You are a good friend."',
        ]
    else:  # a trip and a surprise
        middle = [
            f"{hero} and {poss} mom went from {place} to {place2}.",
            f"On the way, {hero} found {obj} on the ground. {pronoun.capitalize()} was {feeling}.",
            f'"Mom, look!" {pronoun} said. "What is it?"',
            f'Mom smiled and said, "It is {obj}. Someone must have lost it."',
            f"So they waited, and soon {friend} came running. It was {fposs} {obj_word}!",
            f"{friend} was so happy that {fpronoun} gave {hero} {obj2} as a thank you.",
        ]
    ending = rng.choice(
        [
            f"{hero} learned that {rng.choice(LESSONS)}.",
            f"That night, {hero} went to bed with a big smile.",
            f"The end was happy, and {hero} and {friend} became best friends.",
            f"And they all played at {place2} until the sun went down.",
        ]
    )
    return " ".join([opening, setting]) + "\n" + " ".join(middle) + "\n" + ending


def iter_stories(n: int, seed: int = 0) -> Iterator[str]:
    """Yield ``n`` short stories; the same ``seed`` always gives the same stories."""
    rng = random.Random(seed)
    for _ in range(n):
        yield _story(rng)


def generate_stories(n: int = 20000, seed: int = 0) -> list[str]:
    """``n`` simple children's stories (characters, places, objects, feelings, dialogue, cause and effect).

    Deterministic by ``seed``; tens of thousands take about a second. This is the offline default corpus of
    ``pretrain()``: tiny models learn its grammar in minutes on a CPU.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    return list(iter_stories(n, seed))


def story_dataset(n: int = 20000, seed: int = 0) -> Dataset:
    """``generate_stories`` as a ``datasets.Dataset`` with a ``text`` column."""
    return Dataset.from_dict({"text": generate_stories(n, seed)})
