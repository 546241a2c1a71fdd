"""The task families of `llm-tasks`: parameterised instruction tasks with short answers, built offline.

Why families. A generator that maps a description to an adapter should interpolate and extrapolate along a task's
parameter ("shift letters by 4" between seen shifts 3 and 5; "by 9" beyond them), which only a family of tasks that
differ in one parameter can measure. Each family lists its parameter values inside the training range (a few of them
held out by default as interpolation tests, never an end of the range) and values outside it (extrapolation tests,
always held out). Format conversions have no numeric parameter: each is its own variant ("categorical").

Families (85 tasks today):
  shift-K            shift each letter of a word K places forward            K 1–6 | 9, 12
  add-K              add K to a number (0–999)                               K 1–20 | 50, 100
  multiply-K         multiply a number (0–199) by K                          K 2–6 | 9, 11
  remainder-K        a number (0–999) modulo K                               K 2–7 | 11, 13
  every-word-K       keep every K-th word of a line                          K 2–4 | 5
  item-K             the K-th item of a list of 8 words                      K 1–5 | 7
  first-letters-K    the first K letters of a word                           K 1–4 | 6
  last-letters-K     the last K letters of a word                            K 1–4 | 6
  repeat-K           the word K times                                        K 2–4 | 6
  number-to-words-D  a D-digit number in English words                       D 2–3 | 4
  words-to-number-D  English number words as digits                          D 2–3 | 4
  topic-N-<set>      which of N chatterbot topics a line is about            N 2–4 | 6
  polarity-T         VADER valence ≥ T: positive, ≤ −T: negative, else neither   T 1.0–2.5 | 0.5, 3.0
  format-<name>      uppercase, reverse, title case, acronym, swap ends, counts, dates      9 variants
Generator-only (DENSE_FAMILIES, in a suite only when its `families` name them): add-dense-K and polarity-dense-T at
values between the inside ones, topic-sets-<topics> with 6 more sets of 2, 3 and 4 topics.

Atoms and splits. Every atom (a word, a number, a date, a chatterbot line) belongs to one split for every task: a seeded
hash of its text decides (SPLIT_PERCENT), and composite inputs (lists, lines of words) are built from atoms of a single
split. So no test atom of any task is an input or answer in any task's training split: "seven" → "7" cannot leak the
test answer of "7" → "seven".

Descriptions: N_PARAPHRASES per task, the first N_TRAIN_PARAPHRASES for training, the others held out for
evaluation (a generator is scored on wording it never saw). Every description says what to answer with.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch

from loragen.suites.suite import hashed_split

N_PARAPHRASES = 5  # descriptions per task
N_TRAIN_PARAPHRASES = 3  # the first ones: for training; the rest are held out for evaluation
SPLIT_PERCENT = {"train": 60, "val": 15, "test": 25}  # share of every kind of atom
MAX_LINE_CHARS = 100  # a chatterbot line longer than this is not used (answers stay short, prompts small)
DATE_YEARS = (1950, 2030)  # ISO dates of these years (end excluded), days 1–28
NUMBERS = 10_000  # numbers 0 … NUMBERS - 1 are atoms
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
TOPIC_SETS = {  # number of candidate topics -> its tasks' topic sets (chatterbot categories)
    2: (("money", "sports"), ("emotion", "computers")),
    3: (("ai", "literature", "trivia"), ("psychology", "science", "movies")),
    4: (("coding", "emotion", "money", "movies"), ("conversations", "science", "sports", "literature")),
    6: (("ai", "computers", "emotion", "money", "sports", "trivia"),),
}
TOPIC_INSIDE = (2, 3, 4)  # numbers of candidate topics inside the training range (others: extrapolation)
TOPIC_NAMES = {"ai": "AI", "conversations": "small talk"}  # category -> the answer's wording (others: the category)
HELDOUT_TOPIC_SETS = (("psychology", "science", "movies"),)  # inside sets held out by default (interpolation tests)
# more tasks of three learnable families, between their parameter values (never outside their ranges), for generators
# to train on only (benchmarks/llm_fit.py --extra-families): not in a suite unless its `families` name them
DENSE_ADD = (4, 6, 7, 9, 11, 12, 13, 14, 16, 17, 18, 19)  # add-dense-K
DENSE_POLARITY = (1.25, 1.75, 2.25)  # polarity-dense-T
DENSE_FAMILIES = ("add-dense", "polarity-dense", "topic-sets")  # topic-sets: 6 more sets of 2, 3 and 4 topics


@dataclass
class Pool:
    """The atoms of one split, from which that split's examples of every task are built."""

    words: list[str]  # lowercase words of 3–9 letters from the chatterbot corpus
    numbers: list[int]  # of 0 … NUMBERS - 1
    dates: list[str]  # ISO dates, YYYY-MM-DD
    lines: dict[str, list[str]]  # chatterbot category -> its lines (≤ MAX_LINE_CHARS)
    valences: list[tuple[str, float]]  # VADER words with their mean valence (−4 … 4)


@dataclass(frozen=True)
class TaskSpec:
    """How one task is built: its family, parameter, descriptions and example maker."""

    name: str
    family: str
    param: int | float | str  # the family's parameter: K, D, N, T, or a format variant's name
    where: str  # "inside" / "outside" the family's training range, or "categorical" (no numeric parameter)
    heldout: bool  # True: held out by default (outside, an interpolation value, or a held-out variant)
    descriptions: tuple[str, ...]  # N_PARAPHRASES; the first N_TRAIN_PARAPHRASES are for training
    # (one split's pool, generator, n) -> at most n (input, answer) pairs with distinct inputs
    make: Callable[[Pool, torch.Generator, int], list[tuple[str, str]]] = field(compare=False)
    extra: dict = field(default_factory=dict, compare=False)  # more params to record (a topic task's topics)


# ---- helpers ----------------------------------------------------------------------------------------------------
def atom_split(key: str) -> str:
    """The split of an atom for every task: a seeded hash of its text."""
    return hashed_split(f"llm-tasks/split/{key}", SPLIT_PERCENT)


def number_words(n: int) -> str:
    """0 … 999,999 in English words, hyphenated tens and no 'and': 4507 -> 'four thousand five hundred seven'."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number_words covers 0 … 999999; found {n}")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + (f"-{ONES[n % 10]}" if n % 10 else "")
    if n < 1000:
        return f"{ONES[n // 100]} hundred" + (f" {number_words(n % 100)}" if n % 100 else "")
    return f"{number_words(n // 1000)} thousand" + (f" {number_words(n % 1000)}" if n % 1000 else "")


def ordinal(k: int) -> str:
    """1 -> '1st', 2 -> '2nd', 12 -> '12th'."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def plural(k: int, word: str) -> str:
    return f"{k} {word}" + ("" if k == 1 else "s")


def sample(items: list, n: int, g: torch.Generator) -> list:
    """n items of a seeded shuffle (all of them when there are fewer)."""
    return [items[i] for i in torch.randperm(len(items), generator=g)[:n].tolist()]


def distinct(draw: Callable[[], tuple[str, str]], n: int, tries: int = 20) -> list[tuple[str, str]]:
    """Up to n pairs of `draw` with distinct inputs (composite inputs can repeat)."""
    out: dict[str, str] = {}
    for _ in range(tries * n):
        if len(out) == n:
            break
        x, y = draw()
        out.setdefault(x, y)
    return list(out.items())


def words_line(pool: Pool, g: torch.Generator, lo: int, hi: int) -> list[str]:
    """lo … hi words of the pool (distinct), in a seeded order."""
    k = int(torch.randint(lo, hi + 1, (1,), generator=g))
    return sample(pool.words, k, g)


def balanced(groups: list[list[str]], answers: list[str], n: int, g: torch.Generator) -> list[tuple[str, str]]:
    """≤ n (input, answer) pairs with every answer equally often (as many as its smallest group allows), seeded order."""
    per = min(n // len(groups), *map(len, groups))
    pairs = [(x, a) for grp, a in zip(groups, answers) for x in sample(grp, per, g)]
    return [pairs[i] for i in torch.randperm(len(pairs), generator=g).tolist()]


def numeric_family(family: str, inside: tuple, outside: tuple, interpolation: tuple,
                   describe: Callable[[int | float], tuple[str, ...]],
                   make: Callable[[int | float, Pool, torch.Generator, int], list[tuple[str, str]]]) -> list[TaskSpec]:
    """One task per parameter value: inside the training range (`interpolation` ones held out) or outside it."""
    if not set(interpolation) <= set(inside[1:-1]):
        raise ValueError(f"{family}: interpolation values must be inside the range, not at its ends; found {interpolation}")
    return [TaskSpec(f"{family}-{p}", family, p, where, where == "outside" or p in interpolation, describe(p),
                     partial(make, p)) for where, values in (("inside", inside), ("outside", outside)) for p in values]


# ---- families -----------------------------------------------------------------------------------------------------
def shift_word(word: str, k: int) -> str:
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in word)


def shift_tasks() -> list[TaskSpec]:
    def describe(k):
        places = plural(k, "place")
        return (f"Shift every letter of the word {places} forward in the alphabet, wrapping from z back to a. Answer "
                f"with the shifted word only.",
                f"Apply a Caesar cipher with a shift of {k} to the word and reply with just the encoded word.",
                f"Replace each letter with the letter {places} later in the alphabet (after z comes a again). Give "
                f"only the result.",
                f"Encode the word by moving each of its letters {k} steps down the alphabet, wrapping around at z. "
                f"Output nothing but the encoded word.",
                f"Rotate each letter of the given word forward by {k} in the alphabet and write the resulting word, "
                f"nothing else.")

    def make(k, pool, g, n):
        return [(w, shift_word(w, k)) for w in sample(pool.words, n, g)]

    return numeric_family("shift", (1, 2, 3, 4, 5, 6), (9, 12), (4,), describe, make)


def arithmetic_tasks() -> list[TaskSpec]:
    def add_text(k):
        return (f"Add {k} to the number. Answer with the result only.",
                f"What is the given number plus {k}? Reply with just the number.",
                f"Increase the number by {k} and give only the new number.",
                f"Compute the sum of the number and {k}; write only the sum.",
                f"Return the input number with {k} added to it, as digits only.")

    def mul_text(k):
        return (f"Multiply the number by {k}. Answer with the result only.",
                f"What is {k} times the given number? Reply with just the number.",
                f"Give the product of the number and {k}, digits only.",
                f"Scale the number up by a factor of {k} and write only the result.",
                f"Return {k} × the input number, nothing else.")

    def mod_text(k):
        return (f"Give the remainder when the number is divided by {k}. Answer with the remainder only.",
                f"What is the number modulo {k}? Reply with just the number.",
                f"Divide the number by {k} and report only what is left over.",
                f"Compute the number mod {k} and write only that value.",
                f"Return the remainder of the integer division of the number by {k}, digits only.")

    def make(op, top, k, pool, g, n):
        return [(str(x), str(op(x, k))) for x in sample([x for x in pool.numbers if x < top], n, g)]

    return (numeric_family("add", (1, 2, 3, 5, 8, 10, 15, 20), (50, 100), (3, 10), add_text,
                           partial(make, lambda x, k: x + k, 1000))
            + numeric_family("add-dense", DENSE_ADD, (), (), add_text, partial(make, lambda x, k: x + k, 1000))
            + numeric_family("multiply", (2, 3, 4, 5, 6), (9, 11), (4,), mul_text, partial(make, lambda x, k: x * k, 200))
            + numeric_family("remainder", (2, 3, 4, 5, 6, 7), (11, 13), (5,), mod_text,
                             partial(make, lambda x, k: x % k, 1000)))


def every_word_tasks() -> list[TaskSpec]:
    def describe(k):
        a, b, c = ordinal(k), ordinal(2 * k), ordinal(3 * k)
        return (f"Keep every {a} word of the line (the {a}, the {b}, and so on) and drop the rest. Answer with the "
                f"kept words separated by spaces.",
                f"Write only the words at positions {k}, {2 * k}, {3 * k}, ... of the line, separated by spaces.",
                f"Starting with the {a} word, take every {a} word of the line and output them in order, nothing else.",
                f"From the line, select each word whose position is a multiple of {k}; reply with those words only, "
                f"separated by spaces.",
                f"Output the {a}, {b}, {c} (and so on) words of the given text and nothing else.")

    def make(k, pool, g, n):
        def draw():
            words = words_line(pool, g, 2 * k, 3 * k)
            return " ".join(words), " ".join(words[k - 1 :: k])

        return distinct(draw, n)

    return numeric_family("every-word", (2, 3, 4), (5,), (3,), describe, make)


def item_tasks() -> list[TaskSpec]:
    def describe(k):
        a = ordinal(k)
        return (f"Answer with the {a} item of the comma-separated list.",
                f"Which word is in position {k} of the list? Reply with that word only.",
                f"Return the {a} entry of the list, nothing else.",
                f"Counting from the left and starting at one, give the list element at position {k} and nothing else.",
                f"Pick out item number {k} from the list and write only that item.")

    def make(k, pool, g, n):
        def draw():
            words = sample(pool.words, 8, g)
            return ", ".join(words), words[k - 1]

        return distinct(draw, n)

    return numeric_family("item", (1, 2, 3, 4, 5), (7,), (3,), describe, make)


def letters_tasks() -> list[TaskSpec]:
    def first_text(k):
        letters = plural(k, "letter")
        return (f"Write the first {letters} of the word, nothing else.",
                f"Answer with only the opening {letters} of the given word.",
                f"Take the word's first {plural(k, 'character')} and reply with just those.",
                f"Give the prefix of length {k} of the word and nothing more.",
                f"Output the beginning of the word, exactly {letters} long.")

    def last_text(k):
        letters = plural(k, "letter")
        return (f"Write the last {letters} of the word, nothing else.",
                f"Answer with only the final {letters} of the given word.",
                f"Take the word's last {plural(k, 'character')} and reply with just those.",
                f"Give the suffix of length {k} of the word and nothing more.",
                f"Output the ending of the word, exactly {letters} long.")

    def make(first, k, pool, g, n):
        words = [w for w in pool.words if len(w) >= k + 2]
        return [(w, w[:k] if first else w[-k:]) for w in sample(words, n, g)]

    return (numeric_family("first-letters", (1, 2, 3, 4), (6,), (3,), first_text, partial(make, True))
            + numeric_family("last-letters", (1, 2, 3, 4), (6,), (2,), last_text, partial(make, False)))


def repeat_tasks() -> list[TaskSpec]:
    def describe(k):
        return (f"Repeat the word {k} times, separated by spaces.",
                f"Write the given word {k} times in a row with a space between copies, nothing else.",
                f"Answer with {k} copies of the word, space-separated.",
                f"Say the word {k} times, one space between each repetition, and nothing else.",
                f"Output the input word repeated {k} times, separated by single spaces.")

    def make(k, pool, g, n):
        return [(w, " ".join([w] * k)) for w in sample(pool.words, n, g)]

    return numeric_family("repeat", (2, 3, 4), (6,), (3,), describe, make)


def number_words_tasks() -> list[TaskSpec]:
    def to_words(d):
        return (f"Write the {d}-digit number in English words, with hyphens between tens and ones and no 'and' "
                f"(for example 342 is three hundred forty-two).",
                f"Spell out the {d}-digit number in lowercase English words, like twenty-one or one hundred six. "
                f"Answer with the words only.",
                "Convert the number to English words (hyphenated tens, no 'and'), nothing else.",
                f"Express the given {d}-digit numeral in words, lowercase, as in five hundred thirty-one; reply with "
                f"the words only.",
                "Say the number the way it is written in words (seventy-eight, two hundred nine) and nothing else.")

    def to_digits(d):
        return (f"Write the number given in English words as a {d}-digit numeral. Answer with the digits only.",
                "Convert the spelled-out number to digits and reply with just the number.",
                "The input is a number in words; give it in digits, nothing else.",
                f"Turn the English number words into an ordinary {d}-digit number and output only that number.",
                "Read the number written out in words and answer with its digits alone.")

    def make(words_out, d, pool, g, n):
        numbers = [x for x in pool.numbers if 10 ** (d - 1) <= x < 10**d]
        pairs = [(str(x), number_words(x)) for x in sample(numbers, n, g)]
        return pairs if words_out else [(w, x) for x, w in pairs]

    return (numeric_family("number-to-words", (2, 3), (4,), (), to_words, partial(make, True))
            + numeric_family("words-to-number", (2, 3), (4,), (), to_digits, partial(make, False)))


def topic_name(category: str) -> str:
    return TOPIC_NAMES.get(category, category)


def topic_tasks() -> list[TaskSpec]:
    def describe(topics):
        names = [topic_name(t) for t in topics]
        listed = ", ".join(names[:-1]) + " or " + names[-1]
        n = len(topics)
        return (f"Which of these topics is the line of conversation about: {listed}? Answer with the topic only.",
                f"Classify the message into one of {n} topics ({', '.join(names)}). Reply with just the topic name.",
                f"Say which topic the sentence belongs to, choosing among {listed}. Give only the topic.",
                f"Pick the subject of the text from the following {n} options: {', '.join(names)}. Output just that "
                f"option.",
                f"The sentence is about {listed}. Name its topic and nothing else.")

    def make(topics, pool, g, n):
        return balanced([pool.lines[t] for t in topics], [topic_name(t) for t in topics], n, g)

    specs = []
    for n_topics, sets in TOPIC_SETS.items():
        inside = n_topics in TOPIC_INSIDE
        for i, topics in enumerate(sets):
            name = f"topic-{n_topics}" + (f"-{'abcdefgh'[i]}" if len(sets) > 1 else "")
            specs.append(TaskSpec(name, "topic", n_topics, "inside" if inside else "outside",
                                  not inside or topics in HELDOUT_TOPIC_SETS, describe(topics), partial(make, topics),
                                  {"topics": [topic_name(t) for t in topics]}))
    for topics in dense_topic_sets():
        specs.append(TaskSpec(f"topic-sets-{'-'.join(topics)}", "topic-sets", len(topics), "inside", False,
                              describe(topics), partial(make, topics), {"topics": [topic_name(t) for t in topics]}))
    return specs


def dense_topic_sets(per_size: int = 6) -> list[tuple[str, ...]]:
    """`per_size` seeded topic sets of each inside size (TOPIC_INSIDE), none of them a set of TOPIC_SETS, over the
    categories those sets use."""
    cats = sorted({c for sets in TOPIC_SETS.values() for topics in sets for c in topics})
    taken = {frozenset(t) for sets in TOPIC_SETS.values() for t in sets}
    g, out = torch.Generator().manual_seed(1213), []
    for n in TOPIC_INSIDE:
        found: list[tuple[str, ...]] = []
        while len(found) < per_size:
            topics = tuple(cats[i] for i in sorted(torch.randperm(len(cats), generator=g)[:n].tolist()))
            if frozenset(topics) not in taken:
                taken.add(frozenset(topics))
                found.append(topics)
        out += found
    return out


def polarity_tasks() -> list[TaskSpec]:
    def describe(t):
        return (f"Rate the word's sentiment on the VADER scale from -4 to 4: answer positive if it is at least {t}, "
                f"negative if it is at most -{t}, and neither otherwise.",
                f"Reply positive, negative or neither: positive when the word's VADER valence is {t} or more, negative "
                f"when it is -{t} or less, neither in between.",
                f"Using VADER valence scores (-4 to +4) with a threshold of {t}, say whether the word is positive, "
                f"negative or neither. One word answer.",
                f"Judge how strongly the word leans: if its VADER sentiment reaches +{t} say positive, if it reaches "
                f"-{t} say negative, else say neither.",
                f"Answer with one of positive, negative, neither, according to whether the word's valence (VADER, -4 "
                f"to 4) is at least {t}, at most -{t}, or in between.")

    def make(t, pool, g, n):
        pos = [w for w, v in pool.valences if v >= t]
        neg = [w for w, v in pool.valences if v <= -t]
        mid = [w for w, v in pool.valences if -t < v < t]
        return balanced([pos, neg, mid], ["positive", "negative", "neither"], n, g)

    return (numeric_family("polarity", (1.0, 1.5, 2.0, 2.5), (0.5, 3.0), (2.0,), describe, make)
            + numeric_family("polarity-dense", DENSE_POLARITY, (), (), describe, make))


def format_tasks() -> list[TaskSpec]:
    def iso_to_words(d: str) -> str:
        y, m, day = map(int, d.split("-"))
        return f"{day} {MONTHS[m - 1]} {y}"

    def per_word(fn):
        return lambda pool, g, n: [(w, fn(w)) for w in sample(pool.words, n, g)]

    def per_line(lo, hi, fn):
        def make(pool, g, n):
            return distinct(lambda: (lambda ws: (" ".join(ws), fn(ws)))(words_line(pool, g, lo, hi)), n)

        return make

    def per_date(fn):
        return lambda pool, g, n: [(d, fn(d)) for d in sample(pool.dates, n, g)]

    variants = {  # name -> (held out by default, descriptions, maker)
        "uppercase": (False, ("Write the word in capital letters only.", "Convert the word to uppercase and reply with it.",
                              "Answer with the same word in all caps, nothing else.",
                              "Turn every letter of the word into a capital letter; output only the result.",
                              "Give back the word shouted: upper-case letters, nothing more."),
                      per_word(str.upper)),
        "reverse": (False, ("Write the word backwards, nothing else.", "Reverse the order of the letters of the word.",
                            "Answer with the word spelled from its last letter to its first.",
                            "Output the given word mirrored, last character first, and nothing more.",
                            "Read the word right to left and write what you get."),
                    per_word(lambda w: w[::-1])),
        "title-case": (False, ("Capitalise the first letter of every word in the line.",
                               "Rewrite the line in title case: each word starts with a capital letter.",
                               "Answer with the line where every word begins with an uppercase letter.",
                               "Make the initial letter of each word a capital and leave the rest lowercase; output "
                               "only the line.",
                               "Return the words with their first letters upper-cased, nothing else."),
                       per_line(2, 4, lambda ws: " ".join(w.capitalize() for w in ws))),
        "acronym": (True, ("Make an acronym from the line: the first letter of each word, in capitals.",
                           "Answer with the initials of the words, uppercase, with no spaces.",
                           "Take the first letter of every word, capitalise them and join them together.",
                           "Abbreviate the phrase to its capitalised initial letters and output only that.",
                           "Write the upper-case initialism of the given words, nothing else."),
                    per_line(3, 4, lambda ws: "".join(w[0] for w in ws).upper())),
        "swap-ends": (False, ("Swap the first and the last word of the line and answer with the new line.",
                              "Exchange the first word with the last word; keep the middle as it is.",
                              "Answer with the line after switching its first and last words.",
                              "Move the opening word to the end and the closing word to the front, leaving the others "
                              "in place; output only the line.",
                              "Write the words again with the first and final ones traded, nothing else."),
                      per_line(3, 5, lambda ws: " ".join([ws[-1], *ws[1:-1], ws[0]]))),
        "count-words": (False, ("How many words are in the line? Answer with the number only.",
                                "Count the words of the line and reply with the count in digits.",
                                "Give the number of words in the text, nothing else.",
                                "Output, as digits, how many space-separated words the input contains.",
                                "Tell me the word count of the line; just the number."),
                        per_line(3, 9, lambda ws: str(len(ws)))),
        "count-letters": (False, ("How many letters does the word have? Answer with the number only.",
                                  "Count the letters of the word and reply with the count in digits.",
                                  "Give the length of the word in letters, nothing else.",
                                  "Output, as digits, the number of characters in the given word.",
                                  "Tell me how long the word is, counted in letters; just the number."),
                          per_word(lambda w: str(len(w)))),
        "date-slash": (False, ("Rewrite the ISO date (YYYY-MM-DD) as DD/MM/YYYY.",
                               "Convert the date from year-month-day to day/month/year with slashes, nothing else.",
                               "Answer with the same date written DD/MM/YYYY.",
                               "Reformat the given YYYY-MM-DD date into the European day/month/year form with slashes; "
                               "output only the date.",
                               "Write the date again, day first, then month, then year, separated by slashes."),
                       per_date(lambda d: "/".join(reversed(d.split("-"))))),
        "date-words": (True, ("Write the ISO date (YYYY-MM-DD) as day, month name and year, like 7 March 2004.",
                              "Convert the date to the form '7 March 2004': day without a leading zero, the month's "
                              "English name, the year.",
                              "Answer with the date written out as day month-name year, nothing else.",
                              "Spell the given YYYY-MM-DD date in British style (day, full month name, year) and "
                              "output only that.",
                              "Rewrite the numeric date with the month as a word, e.g. 2011-09-05 becomes 5 September "
                              "2011."),
                       per_date(iso_to_words)),
    }
    return [TaskSpec(f"format-{name}", "format", name, "categorical", held, texts, make)
            for name, (held, texts, make) in variants.items()]


def all_task_specs(dense: bool = False) -> list[TaskSpec]:
    """Every task of the suite, in a fixed order (families as in the module docstring); `dense`: the DENSE_FAMILIES
    too."""
    specs = (shift_tasks() + arithmetic_tasks() + every_word_tasks() + item_tasks() + letters_tasks() + repeat_tasks()
             + number_words_tasks() + topic_tasks() + polarity_tasks() + format_tasks())
    specs = [s for s in specs if dense or s.family not in DENSE_FAMILIES]
    for s in specs:
        if len(s.descriptions) != N_PARAPHRASES:
            raise AssertionError(f"{s.name}: expected {N_PARAPHRASES} descriptions; found {len(s.descriptions)}")
    return specs


# ---- atoms --------------------------------------------------------------------------------------------------------
def corpus_words(lines: list[str]) -> list[str]:
    """Lowercase words of 3–9 letters in the lines, sorted; number words are left out (they belong to their number's
    split: 'ten' is the atom 10)."""
    numeric = set(ONES) | set(TENS) | {"hundred", "thousand"}
    return sorted({w for line in lines for w in re.findall(r"[A-Za-z']+", line) if w.isalpha() and w.islower()
                   and 3 <= len(w) <= 9 and w not in numeric})


def build_pools() -> dict[str, Pool]:
    """Split -> its atoms: corpus words, numbers, dates, chatterbot lines by category (text_topics' sources: a line
    shared by two categories belongs to neither) and VADER words."""
    from loragen.suites.text_topics import chatterbot_categories, load_sources, vader_words

    pools = {s: Pool([], [], [], {}, []) for s in SPLIT_PERCENT}
    for w in corpus_words([u for lines in chatterbot_categories().values() for u in lines]):
        pools[atom_split(w)].words.append(w)
    for x in range(NUMBERS):
        pools[atom_split(str(x))].numbers.append(x)
    day, end = datetime.date(DATE_YEARS[0], 1, 1), datetime.date(DATE_YEARS[1], 1, 1)
    while day < end:
        if day.day <= 28:
            pools[atom_split(day.isoformat())].dates.append(day.isoformat())
        day += datetime.timedelta(days=1)
    for category, items in load_sources().items():
        if not category.startswith("vader-"):
            for p in pools.values():
                p.lines[category] = []
            for text, _ in items:
                if len(text) <= MAX_LINE_CHARS:
                    pools[atom_split(text)].lines[category].append(text)
    for w, v in sorted(vader_words()):
        pools[atom_split(w)].valences.append((w, v))
    return pools
