"""Sentences of the synthetic corpus: Harvard sentences plus a grammar-based generator.

Text is lowercase words without punctuation (apostrophes inside words are kept, as in
"it's"). The pool is fixed (its own seed, independent of the corpus seed) and every
sentence belongs to one split by a hash of its text, so test sentences never occur in
training whatever seed or utterance count a build uses.
"""

from __future__ import annotations

import functools
import random
import re

from moe_asr.synth.voices import split_of

__all__ = [
    "HARVARD",
    "POOL_SIZE",
    "normalize",
    "generate_sentences",
    "sentence_pool",
    "split_sentences",
    "vocabulary",
]

# IEEE/Harvard sentences (1969), lists 1-5: public domain.
HARVARD: tuple[str, ...] = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "Large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
    "A king ruled the state in the early days.",
    "The ship was torn apart on the sharp reef.",
    "Sickness kept him home the third week.",
    "The wide road shimmered in the hot sun.",
    "The lazy cow lay in the cool grass.",
    "Lift the square stone over the fence.",
    "The rope will bind the seven books at once.",
    "Hop over the fence and plunge in.",
    "The friendly gang left the drug store.",
    "Mesh wire keeps chicks inside.",
)

POOL_SIZE = 9000  # generated sentences in the fixed pool (before adding HARVARD)
_POOL_SEED = 20240601

# ----------------------------------------------------------------------------- lexicon

_THINGS = """
apple bag ball basket bell belt bench bicycle blanket boat book boot bottle bowl box
bracelet bread brick bridge brush bucket button cabinet cake camera candle cap car carpet
cart chain chair chalk cheese clock cloth coat coin comb cookie cup curtain cushion desk
diary dish door drawer drum egg envelope fan feather fence flag flower fork frame glass
glove hammer hat helmet hook horn jacket jar jug kettle key kite knife ladder lamp leaf
lemon letter lid lock map mat medal mirror mug nail napkin necklace needle net notebook
onion orange oven package pan parcel pen pencil pepper piano picture pie pillow pipe plate
pocket pot potato purse puzzle radio rake ribbon ring rock rope rug ruler sack saddle
sandwich saw scarf scissors screen shawl sheet shell shirt shoe shovel sign skirt sock
sofa spoon stamp stick stone stool stove string suitcase sweater table tablet teapot
telephone ticket tie tile toaster tomato towel toy tray trumpet truck trunk tub umbrella
vase vest violin wagon wallet watch wheel whistle window wire bucket candle basket
tent torch lantern compass helmet bottle barrel banner cable canvas carton crate drill
engine fiddle funnel goblet harp kayak kennel ladle locket mallet mitten paddle pebble
pillar plank pouch quilt rattle saucer shelf shield sled spade spool statue sword
thimble trophy tulip vessel wrench
"""
_ANIMALS = """
ant bear bee bird cat cow crab crow deer dog donkey duck eagle fox frog goat goose hen
horse lamb lion monkey mouse mule owl parrot pig pony rabbit rat seal shark sheep snake
spider swan tiger turkey turtle whale wolf zebra camel beaver badger falcon otter pigeon
raven robin salmon sparrow squirrel trout beetle moth
"""
_PEOPLE = """
actor artist baker banker barber boy builder butcher captain carpenter chef child clerk
coach cook dancer dentist doctor driver farmer fisherman friend gardener girl guard guest
guide hunter judge king lawyer manager merchant miner neighbor nurse officer painter pilot
player poet porter priest prince queen rider sailor scholar singer soldier stranger student
surgeon tailor teacher tourist traveler visitor waiter writer
"""
_RELATIVES = "aunt brother cousin daughter father grandfather grandmother mother nephew niece sister son uncle"
_PLACES = """
airport bakery bank barn beach cabin castle cave cellar church city classroom cliff
college corner cottage court desert factory farm field forest garage garden gate hall
harbor hill hospital hotel house island kitchen lake library market meadow mill mountain
museum office orchard palace park pond porch prison river road school shop station store
street studio temple tower town valley village wharf yard attic bay canyon dock gallery
inn lane plaza ranch stable stadium theater tunnel vineyard warehouse workshop
"""
_NAMES = """
adam alice amelia andrew anna arthur ben carlos charlotte clara daniel david diana edward
elena emily emma frank george grace hannah harry helen henry isaac isabel jack james jane
john julia kate laura leo lily lucy maria mark martin mary michael nina noah oliver oscar
paul peter rachel robert rose ruth sam sarah simon sofia thomas victor william zoe
"""
_ADJECTIVES = """
ancient angry bent big bitter black blue bold brave bright broad broken brown busy calm
careful cheap clean clever cold cool cozy crooked cruel curious damp dark dear deep dirty
dry dull dusty eager early empty fair famous fancy fast fat fine flat fresh friendly full
gentle giant glad golden good grand gray great green happy hard heavy high hollow honest
huge humble hungry icy kind large late lazy light little lively lonely long loud lovely
low lucky mild modern narrow neat new nice noisy odd old orange pale plain plastic polite
poor proud purple quick quiet rare red rich ripe rough round rusty sad safe salty sharp
shiny short shy silent silver simple slim slow small smooth soft solid sour square steady
steep sticky stiff strange strict strong sweet tall tame thick thin tidy tiny tired tough
ugly warm weak wet white wide wild wise wooden worn yellow young
"""
_ADVERBS = """
again already always badly boldly briefly calmly carefully cheerfully clearly closely
daily eagerly early easily finally firmly gently gladly happily honestly kindly later
loudly neatly nearly never often openly patiently politely quickly quietly rarely
safely seldom silently slowly softly soon sadly suddenly swiftly today together tomorrow
twice warmly wisely yesterday
"""
_PREPS = "above across against along among around behind below beneath beside near under inside outside over past through toward with without"
_TIMES = """
at dawn|at noon|at night|at midnight|in the morning|in the evening|in the afternoon|
on monday|on tuesday|on wednesday|on thursday|on friday|on saturday|on sunday|
last week|last year|next week|next month|every day|every winter|in the spring|
in the summer|in the autumn|in the winter|before lunch|after dinner|after school|
during the storm|before sunrise|after the rain|last night|this morning
"""
_NUMBERS = """
two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety
"""
# transitive verbs: "base" (regular past) or "base:past"
_TVERBS = """
accept add admire answer arrange bake borrow brush burn call carry catch:caught
change check clean climb collect count cover crush cut:cut deliver drag:dragged draw:drew
drop:dropped eat:ate enjoy explain fetch fill find:found fix fold follow gather
grab:grabbed guard hang:hung help hide:hid hold:held hunt kick kill kiss knock lend:lent
lift like load lock lose:lost love mend miss move need notice open order own pack paint
pass pick plant play polish pour pull push reach read:read remember repair return
ride:rode rub:rubbed sell:sold send:sent shake:shook share sharpen show sign smell sort
steal:stole stir:stirred stop:stopped study:studied sweep:swept take:took taste teach:taught
test throw:threw tie touch trust turn visit want warm wash watch wear:wore weigh wipe
wrap:wrapped bring:brought build:built buy:bought choose:chose drive:drove feed:fed
forget:forgot keep:kept leave:left make:made meet:met paint:painted see:saw sew:sewed
spill:spilled split:split spread:spread sting:stung strike:struck win:won write:wrote
"""
_IVERBS = """
arrive cough cry:cried dance:danced fall:fell fly:flew hurry:hurried jump laugh
lie:lay listen nod:nodded pause rest run:ran shout sing:sang sit:sat sleep:slept smile
sneeze speak:spoke stay swim:swam talk travel:traveled wait walk whisper work yawn
"""
_DEGREE = "very quite rather too so fairly really"
_IRREGULAR_PLURALS = {
    "child": "children",
    "mouse": "mice",
    "goose": "geese",
    "knife": "knives",
    "leaf": "leaves",
    "shelf": "shelves",
    "fisherman": "fishermen",
    "sheep": "sheep",
    "deer": "deer",
    "salmon": "salmon",
    "trout": "trout",
    "scissors": "scissors",
    "wolf": "wolves",
    "calf": "calves",
    "scarf": "scarves",
}
_AN_EXCEPTIONS = {"one", "university", "uniform", "unit", "useful"}


def _words(block: str) -> list[str]:
    return list(dict.fromkeys(block.split()))


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if re.search(r"(s|x|z|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    if noun.endswith("o") and noun in {"potato", "tomato"}:
        return noun + "es"
    return noun + "s"


def _verbs(block: str) -> list[tuple[str, str]]:
    out = {}
    for item in block.split():
        base, _, past = item.partition(":")
        if not past:
            if base.endswith("e"):
                past = base + "d"
            elif re.search(r"[^aeiou]y$", base):
                past = base[:-1] + "ied"
            else:
                past = base + "ed"
        out[base] = past
    return list(out.items())


class _Lexicon:
    def __init__(self) -> None:
        self.things = _words(_THINGS)
        self.animals = _words(_ANIMALS)
        self.people = _words(_PEOPLE)
        self.relatives = _words(_RELATIVES)
        self.places = _words(_PLACES)
        self.names = _words(_NAMES)
        self.adjectives = _words(_ADJECTIVES)
        self.adverbs = _words(_ADVERBS)
        self.preps = _words(_PREPS)
        self.times = [t.strip() for t in _TIMES.replace("\n", "").split("|") if t.strip()]
        self.numbers = _words(_NUMBERS)
        self.tverbs = _verbs(_TVERBS)
        self.iverbs = _verbs(_IVERBS)
        self.degree = _words(_DEGREE)
        self.nouns = self.things + self.animals


@functools.lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    return _Lexicon()


def _det(r: random.Random) -> str:
    return r.choice(("the", "the", "the", "a", "this", "that", "my", "your", "his", "her", "our"))


def _np(r: random.Random, lx: _Lexicon, nouns: list[str], adj_p: float = 0.5) -> str:
    words = [_det(r)]
    if r.random() < adj_p:
        words.append(r.choice(lx.adjectives))
    words.append(r.choice(nouns))
    return " ".join(words)


def _sentence(r: random.Random, lx: _Lexicon) -> str:
    t = r.randrange(15)
    tv, tv_past = r.choice(lx.tverbs)
    iv, iv_past = r.choice(lx.iverbs)
    name, name2 = r.sample(lx.names, 2)
    num = r.choice(lx.numbers)
    if t == 0:
        s = f"{_np(r, lx, lx.people)} {tv_past} {_np(r, lx, lx.nouns)} {r.choice(lx.preps)} the {r.choice(lx.places)}"
    elif t == 1:
        s = f"{name} {tv_past} {num} {r.choice(lx.adjectives)} {_plural(r.choice(lx.things))} {r.choice(lx.times)}"
    elif t == 2:
        s = f"{_np(r, lx, lx.people, 0.3)} will {tv} {_np(r, lx, lx.nouns)} {r.choice(lx.adverbs)}"
    elif t == 3:
        s = f"{name} and {name2} {iv_past} {r.choice(('near', 'inside', 'behind', 'outside'))} the {r.choice(lx.places)} {r.choice(lx.times)}"
    elif t == 4:
        s = f"there were {num} {_plural(r.choice(lx.nouns))} {r.choice(lx.preps)} the {r.choice(lx.adjectives)} {r.choice(lx.places)}"
    elif t == 5:
        s = f"did {_np(r, lx, lx.people, 0.2)} {tv} {_np(r, lx, lx.things)} {r.choice(lx.times)}"
    elif t == 6:
        s = f"please {tv} {_np(r, lx, lx.things)} {r.choice(lx.preps)} {_np(r, lx, lx.things, 0.2)}"
    elif t == 7:
        a1, a2 = r.sample(lx.adjectives, 2)
        s = f"{name} said that {_np(r, lx, lx.nouns, 0.0)} was {a1} and {a2}"
    elif t == 8:
        s = f"the {r.choice(lx.animals)} {iv_past} {r.choice(lx.adverbs)} {r.choice(('near', 'behind', 'inside', 'past'))} the {r.choice(lx.places)}"
    elif t == 9:
        s = f"{_np(r, lx, lx.people)} {tv_past} {name} {r.choice(lx.times)}"
    elif t == 10:
        s = f"we can {tv} {num} {_plural(r.choice(lx.things))} before {r.choice(('noon', 'dinner', 'lunch', 'sunset', 'midnight', 'the party'))}"
    elif t == 11:
        s = f"my {r.choice(lx.relatives)} {tv_past} {_np(r, lx, lx.things)} {r.choice(lx.preps)} {_np(r, lx, lx.things, 0.2)}"
    elif t == 12:
        s = f"{_np(r, lx, lx.things, 0.0)} in the {r.choice(lx.places)} is {r.choice(lx.degree)} {r.choice(lx.adjectives)}"
    elif t == 13:
        s = f"{name} {iv_past} because {_np(r, lx, lx.nouns, 0.0)} was {r.choice(lx.degree)} {r.choice(lx.adjectives)}"
    else:
        s = f"how many {_plural(r.choice(lx.nouns))} did {name} {tv} {r.choice(lx.times)}"
    return _fix_articles(s)


def _fix_articles(s: str) -> str:
    words = s.split()
    for i in range(len(words) - 1):
        if words[i] == "a" and words[i + 1][0] in "aeiou" and words[i + 1] not in _AN_EXCEPTIONS:
            words[i] = "an"
    return " ".join(words)


def normalize(sentence: str) -> str:
    """Lowercase words, punctuation removed (in-word apostrophes kept), single spaces."""
    s = sentence.lower().replace("\u2019", "'")
    s = re.sub(r"[^a-z' ]+", " ", s)
    s = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", s)
    return " ".join(s.split())


def generate_sentences(n: int, seed: int) -> list[str]:
    """``n`` distinct grammar-based sentences (normalized), deterministic for ``seed``."""
    r = random.Random(seed)
    lx = _lexicon()
    out: dict[str, None] = {}
    tries = 0
    while len(out) < n:
        out.setdefault(_sentence(r, lx))
        tries += 1
        assert tries < 50 * n + 1000, "grammar cannot produce enough distinct sentences"
    return list(out)


@functools.lru_cache(maxsize=1)
def sentence_pool() -> tuple[str, ...]:
    """The fixed pool: Harvard sentences then generated ones, all distinct."""
    pool = dict.fromkeys(normalize(s) for s in HARVARD)
    for s in generate_sentences(POOL_SIZE, _POOL_SEED):
        pool.setdefault(s)
    return tuple(pool)


@functools.lru_cache(maxsize=4)
def split_sentences(split: str) -> tuple[str, ...]:
    """Sentences of one split (80/10/10 by a hash of the text; disjoint across splits)."""
    return tuple(s for s in sentence_pool() if split_of("sentence:" + s) == split)


def vocabulary(sentences: tuple[str, ...] | list[str]) -> set[str]:
    return {w for s in sentences for w in s.split()}
