"""Word lists of the near-miss guard: what counts as a number, a unit, a negation, an
opposite, an entity.

Everything here is plain data (frozensets, dicts of str) built once at import, so the
guard's decisions depend on nothing but the two texts: no model, no hash order, no state.
Words are lower case and singular (the guard lemmatizes with :func:`lemma` before looking
them up). The lists are written for English LLM-app prompts; a word missing from a list
only makes the guard more permissive (it falls back to letting the cosine decide).
"""

from __future__ import annotations

#: Irregular plurals and forms the suffix rules of :func:`lemma` would get wrong.
IRREGULAR: dict[str, str] = {
    "feet": "foot", "teeth": "tooth", "geese": "goose", "mice": "mouse", "men": "man",
    "women": "woman", "children": "child", "people": "person", "knives": "knife",
    "wives": "wife", "lives": "life", "leaves": "leaf", "halves": "half", "wolves": "wolf",
    "shelves": "shelf", "loaves": "loaf", "calves": "calf", "potatoes": "potato",
    "tomatoes": "tomato", "heroes": "hero", "echoes": "echo", "vetoes": "veto",
    "analyses": "analysis", "crises": "crisis", "theses": "thesis", "indices": "index",
    "matrices": "matrix", "vertices": "vertex", "criteria": "criterion", "data": "data",
    "media": "media", "bacteria": "bacterium", "fungi": "fungus", "cacti": "cactus",
    "series": "series", "species": "species", "news": "news", "bus": "bus", "gas": "gas",
    "celsius": "celsius", "fahrenheit": "fahrenheit", "kelvin": "kelvin", "yes": "yes",
    "does": "do", "did": "do", "done": "do", "is": "be", "are": "be", "was": "be",
    "were": "be", "has": "have", "had": "have", "ios": "ios", "macos": "macos",
    "windows": "windows", "pandas": "pandas", "analytics": "analytics", "us": "us",
    "jeans": "jeans", "chess": "chess", "glasses": "glasses", "lens": "lens",
    "aws": "aws", "kubernetes": "kubernetes", "postgres": "postgres", "js": "js",
    "ts": "ts", "css": "css", "dns": "dns", "sms": "sms", "gps": "gps", "https": "https",
    "this": "this", "his": "his", "its": "its", "less": "less", "always": "always",
}

#: Words with no content of their own (role and pivot checks skip them).
STOPWORDS: frozenset[str] = frozenset("""
a an the this that these those it its it's i me my mine we us our you your yours he him
his she her they them their there here what which who whom whose when where why how whether
if then than so as at by for from in into of on onto to with within without about above
below over under up down out off again further once and or but nor not no yes be been being
am do have having can could should would will shall may might must just very too also only
own same such both each few more most other some any all every either neither one s t can't
don't doesn't isn't aren't won't wasn't weren't shouldn't couldn't wouldn't hasn't haven't
please tell me give show explain let's i'm what's how's where's who's there's it's that's
way best good ok okay get got use using used make makes made help need want know like
""".split())

#: Words that negate. Tokens ending in "n't" negate too (see ``rules``).
NEGATIONS: frozenset[str] = frozenset(
    "not no never without none nothing nobody nowhere neither nor cannot".split())

#: Words that negate without a negation word ("avoid", "omit", "lack"): a text may use one
#: of them where its paraphrase says "not" or "without".
IMPLICIT_NEGATIONS: frozenset[str] = frozenset("""
avoid avoiding prevent preventing prevents omit omits omitting omitted absence absent lack
lacks lacking except excluding fail fails failing unable instead rather unless differ
different optional exclude excludes excluded missing neither too non zero uncertain unclear
unknown unsafe unavailable unnecessary unlikely impossible invalid incorrect inaccurate
""".split())

#: Phrases that contain a negation word but do not negate the question.
NEGATION_IDIOMS: frozenset[tuple[str, str]] = frozenset({
    ("not", "only"), ("no", "matter"), ("or", "not"), ("no", "doubt"), ("not", "just"),
    ("nothing", "but"), ("no", "less"), ("not", "necessarily"),
})

#: Number words -> value (compounds such as "twenty five" are summed by the parser).
NUMBER_WORDS: dict[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "dozen": 12,
}
NUMBER_SCALES: dict[str, int] = {
    "hundred": 100, "thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000,
    "trillion": 1_000_000_000_000,
}
#: Suffixes glued to a number that scale it ("5k", "3m" stay ambiguous and are ignored).
NUMBER_SUFFIX_SCALE: dict[str, int] = {"k": 1000, "bn": 1_000_000_000}


def _units() -> dict[str, str]:
    """Unit spellings -> canonical unit name."""
    groups = {
        "millimeter": "mm millimeter millimetre", "centimeter": "cm centimeter centimetre",
        "meter": "m meter metre", "kilometer": "km kilometer kilometre kilometers",
        "inch": "inch inches", "foot": "foot ft", "yard": "yard yd", "mile": "mile mi",
        "nautical mile": "nmi nautical", "knot": "knot kn",
        "milligram": "mg milligram milligramme", "gram": "g gram gramme",
        "kilogram": "kg kilo kilogram kilogramme", "ounce": "oz ounce", "pound": "lb lbs pound",
        "ton": "ton tonne", "stone": "stone",
        "milliliter": "ml milliliter millilitre", "liter": "l liter litre",
        "gallon": "gal gallon", "quart": "qt quart", "pint": "pt pint", "cup": "cup",
        "tablespoon": "tbsp tablespoon", "teaspoon": "tsp teaspoon",
        "fluid ounce": "floz",
        "second": "sec seconds", "minute": "min minute", "hour": "hr hour hourly",
        "day": "day daily", "week": "week weekly wk", "month": "month monthly",
        "year": "yr year yearly annual annually", "decade": "decade", "century": "century",
        "millisecond": "ms millisecond", "microsecond": "microsecond", "nanosecond": "ns nanosecond",
        "bit": "bit", "byte": "byte", "kilobit": "kbit kilobit", "kilobyte": "kb kilobyte",
        "megabit": "mbit megabit", "megabyte": "mb megabyte", "gigabit": "gbit gigabit",
        "gigabyte": "gb gigabyte", "terabyte": "tb terabyte", "petabyte": "pb petabyte",
        "celsius": "celsius centigrade", "fahrenheit": "fahrenheit", "kelvin": "kelvin",
        "mph": "mph", "km/h": "kph kmh km/h", "meter per second": "m/s",
        "percent": "% percent percentage pct", "degree": "degree",
        "dollar": "$ usd dollar buck", "euro": "€ eur euro", "pound sterling": "£ gbp sterling",
        "yen": "¥ jpy yen", "yuan": "cny rmb yuan", "rupee": "inr rupee",
        "bitcoin": "btc bitcoin", "cent": "cent",
        "calorie": "calorie kcal cal", "kilojoule": "kj kilojoule", "joule": "joule",
        "watt": "watt", "kilowatt": "kw kilowatt", "kilowatt hour": "kwh",
        "volt": "volt", "amp": "amp ampere", "hertz": "hz hertz",
        "kilohertz": "khz kilohertz", "megahertz": "mhz megahertz", "gigahertz": "ghz gigahertz",
        "acre": "acre", "hectare": "ha hectare", "square": "square sq",
        "psi": "psi", "bar": "bar", "pascal": "pa pascal",
    }
    return {spelling: unit for unit, spellings in groups.items() for spelling in spellings.split()}


#: Unit spelling (lower case, singular) -> canonical unit.
UNITS: dict[str, str] = _units()
#: Unit spellings that are also ordinary words: counted only right after a number or "per".
AMBIGUOUS_UNITS: frozenset[str] = frozenset(
    "m l g mi cup min sec second bar stone ton pt kn ha pa cal ms ns amp pound cent "
    "square degree".split())


def _opposites() -> list[tuple[frozenset[str], frozenset[str]]]:
    """Pairs of opposite poles; each pole is a set of interchangeable words.

    Phrasal verbs are single tokens here ("turn_on"): the tokenizer glues a particle to
    the verb before it (see ``text.PARTICLE_VERBS``).
    """
    pairs = [
        ("enable turn_on switch_on activate unmute", "disable turn_off switch_off deactivate mute"),
        ("encrypt", "decrypt"), ("encode", "decode"), ("compress zip", "decompress unzip extract"),
        ("install", "uninstall"), ("increase raise boost grow enlarge bigger higher",
                                   "decrease lower reduce shrink smaller"),
        ("buy purchase", "sell"), ("start launch boot", "stop halt kill shut_down"),
        ("create add insert", "delete remove drop erase"), ("open", "close"),
        ("upload push", "download pull"), ("import", "export"), ("lock", "unlock"),
        ("log_in login sign_in signin", "log_out logout sign_out signout"),
        ("connect", "disconnect"), ("mount", "unmount"), ("show unhide", "hide"),
        ("allow permit whitelist", "deny block forbid blacklist ban"),
        ("accept approve", "reject decline refuse"), ("win", "lose"), ("gain", "lose"),
        ("benefit advantage pro upside", "risk drawback disadvantage con downside danger"),
        ("maximum max highest largest biggest most", "minimum min lowest smallest least"),
        ("best", "worst"), ("fastest quickest", "slowest"), ("cheapest", "priciest"),
        ("hot", "cold"), ("before", "after"), ("above", "below"), ("inside", "outside"),
        ("input", "output"), ("send", "receive"), ("borrow", "lend"), ("rise", "fall"),
        ("expand", "collapse"), ("subscribe", "unsubscribe"), ("follow", "unfollow"),
        ("freeze", "unfreeze"), ("merge join combine", "split separate"),
        ("attach", "detach"), ("serialize", "deserialize"), ("upgrade", "downgrade"),
        ("zoom_in", "zoom_out"), ("scale_up", "scale_down"), ("first", "last"),
        ("earliest oldest", "latest newest"), ("ascending", "descending"),
        ("uppercase", "lowercase"), ("positive", "negative"), ("true", "false"),
        ("safe", "unsafe dangerous"), ("legal", "illegal"), ("pass", "fail"),
        ("arrive arrival", "depart departure"), ("credit", "debit"), ("deposit", "withdraw"),
        ("hire", "fire"), ("left", "right"), ("north", "south"), ("east", "west"),
        ("male man men boy husband father", "female woman women girl wife mother"),
        ("morning", "evening night"), ("summer", "winter"), ("wet", "dry"),
        ("long", "short"), ("fast", "slow"), ("high", "low"), ("more", "less fewer"),
        ("strong", "weak"), ("cheap", "expensive"), ("rich", "poor"), ("easy", "hard difficult"),
        ("include", "exclude"), ("like love", "dislike hate"), ("agree", "disagree"),
        ("appear", "disappear"), ("online", "offline"), ("public", "private"),
        ("internal", "external"), ("enter", "exit leave"), ("begin", "end finish"),
        ("pause", "resume"), ("undo", "redo"), ("encrypted", "decrypted"),
        ("approved", "rejected"), ("legit legitimate", "scam fake"), ("healthy", "unhealthy"),
        ("hire", "lay_off"), ("push", "pop"), ("prefix", "suffix"), ("upper", "lower"),
        ("forward", "backward"), ("clockwise", "counterclockwise anticlockwise"),
        ("inbound", "outbound"), ("sync", "unsync"),
        ("pin", "unpin"), ("archive", "unarchive"), ("block", "unblock"),
        ("bold", "unbold"), ("like", "unlike"), ("save", "discard"),
        ("include", "omit"), ("win", "loss"), ("profit", "loss"), ("asset", "liability"),
        ("acid", "base"), ("weight_gain", "weight_loss"), ("overweight", "underweight"),
        ("overestimate", "underestimate"), ("overclock", "underclock"),
        ("increment", "decrement"), ("inflation", "deflation"),
    ]
    return [(frozenset(a.split()), frozenset(b.split())) for a, b in pairs]


#: Opposite pairs, each side a set of interchangeable words.
OPPOSITES: list[tuple[frozenset[str], frozenset[str]]] = _opposites()

#: Negating prefixes: "uninstall" opposes "install" when the bare word is on the other side.
OPPOSING_PREFIXES: tuple[str, ...] = ("un", "dis", "de", "non", "non-", "in", "im", "il", "ir")
#: Words that start like a prefixed opposite but are not one.
NOT_PREFIXED: frozenset[str] = frozenset("""
display discover discount discuss dismiss discharge discard disk disc distance distinct
district distribute disturb dish disaster discipline dispatch design define denote delay
deploy detail demand deliver determine describe derive depend desire depart deserve debug
deposit decide declare decline degree delete delta demo dental deny depth deputy desk detect
develop device devote diet dinner direct dirt include increase index indicate individual
industry infant inform input inside install instance instant insure intend invest involve
impact import impose improve impulse income inch insight invoice illness image imagine
irony iron uncle under understand undo union unique unit united universe university unless
until unto unzip nonce debit decimal deep default delight dessert detox devil
""".split())

#: Action verbs grouped by intent; two different groups facing each other change the task.
ACTION_GROUPS: dict[str, str] = {}
for _group, _words in {
    "inspect": "check see view find look_up lookup verify test monitor track",
    "raise": "increase raise boost improve grow maximize",
    "lower": "decrease lower reduce cut shrink minimize",
    "repair": "fix repair solve resolve troubleshoot debug",
    "cancel": "cancel terminate unsubscribe",
    "reset": "reset restore recover",
    "rename": "rename",
    "calculate": "calculate compute",
    "transfer": "transfer move send",
    "clean": "clean wash",
    "boil": "boil", "bake": "bake", "fry": "fry", "grill": "grill", "roast": "roast",
    "steam": "steam",
}.items():
    for _word in _words.split():
        ACTION_GROUPS[_word] = _group

#: Verbs whose particle changes the meaning: "turn on" becomes the token "turn_on".
PARTICLE_VERBS: frozenset[str] = frozenset(
    "turn switch sign log scale zoom shut power lay look weight".split())
PARTICLES: frozenset[str] = frozenset("on off in out up down".split())

#: Prepositions that give a word its role ("from X to Y", "X in Y", "X than Y").
ROLE_MARKERS: frozenset[str] = frozenset(
    "from to into than in onto for of by with on at over under vs versus before after "
    "toward towards".split())


def _entities() -> frozenset[str]:
    """Names that change the answer when one replaces another (lower case, singular)."""
    lists = [
        # programming languages, runtimes, tools, platforms, products
        """python java javascript typescript rust golang c++ c# f# ruby php swift kotlin scala
        perl haskell elixir erlang clojure lua dart julia matlab fortran cobol pascal groovy
        bash zsh fish powershell sql html css sass json yaml xml toml csv markdown latex
        pip npm yarn pnpm conda poetry venv cargo maven gradle homebrew brew apt yum
        docker podman kubernetes k8s helm terraform ansible git github gitlab bitbucket
        aws azure gcp heroku vercel netlify s3 ec2 lambda linux windows macos ubuntu debian
        fedora centos arch android ios ipados iphone ipad mac macbook pixel chrome firefox
        safari edge excel word powerpoint outlook gmail slack zoom teams discord whatsapp
        telegram instagram facebook twitter tiktok youtube linkedin reddit spotify netflix
        postgresql postgres mysql mariadb sqlite mongodb redis cassandra elasticsearch
        dynamodb oracle snowflake bigquery kafka rabbitmq nginx apache react vue angular
        svelte django flask fastapi rails laravel spring express next.js node node.js deno
        bun numpy pandas polars pytorch tensorflow keras jax scikit sklearn spark hadoop
        jupyter vscode vim emacs intellij pycharm xcode tailwind bootstrap jquery graphql
        rest grpc http https ssh ftp tcp udp dns vpn wifi bluetooth usb hdmi pdf gpg
        openai chatgpt gpt claude gemini llama bitcoin ethereum coinbase paypal venmo stripe
        dropbox onedrive notion trello jira confluence figma photoshop illustrator""",
        # places
        """africa asia europe antarctica australia oceania america north south
        france germany spain portugal italy greece netherlands belgium switzerland austria
        sweden norway denmark finland iceland ireland england scotland wales britain uk
        poland ukraine russia turkey egypt morocco nigeria kenya ethiopia china japan korea
        india pakistan bangladesh vietnam thailand indonesia philippines malaysia singapore
        canada mexico brazil argentina chile peru colombia venezuela cuba usa
        israel iran iraq saudi arabia uae qatar dubai zealand
        paris london berlin madrid rome milan lisbon porto barcelona amsterdam brussels vienna
        prague budapest warsaw moscow istanbul athens dublin edinburgh munich hamburg zurich
        geneva stockholm oslo copenhagen helsinki tokyo osaka kyoto beijing shanghai seoul
        delhi mumbai bangalore bangkok hanoi jakarta manila sydney melbourne auckland toronto
        vancouver montreal chicago boston seattle denver austin dallas houston miami atlanta
        york angeles francisco diego vegas orleans jersey mexico washington california texas
        florida ontario quebec bavaria yosemite disneyland hawaii alaska""",
        # languages and nationalities
        """english french german spanish portuguese italian dutch greek swedish norwegian
        danish finnish polish russian ukrainian turkish arabic hebrew persian hindi bengali
        urdu chinese mandarin cantonese japanese korean vietnamese thai indonesian latin
        american british canadian mexican brazilian australian european asian african""",
        # animals
        """dog puppy cat kitten rabbit bunny hamster mouse rat horse pony cow pig
        sheep goat chicken duck goose turkey parrot budgie canary bird fish goldfish turtle
        tortoise snake lizard gecko frog spider bee ant mosquito butterfly lion tiger bear
        wolf fox deer elephant giraffe zebra monkey gorilla whale dolphin shark octopus
        crocodile alligator eagle owl penguin camel kangaroo koala panda""",
        # food and drink
        """coffee tea espresso milk juice water wine beer whiskey vodka soda
        bread rice pasta noodle pizza burger sandwich salad soup cheese butter egg yogurt
        chocolate sugar honey salt pepper garlic onion potato tomato carrot broccoli
        spinach lettuce cucumber mushroom basil mint avocado apple banana orange lemon lime
        strawberry blueberry grape mango pineapple peach pear cherry watermelon
        chicken beef pork lamb salmon tuna shrimp tofu bean lentil oat almond peanut
        walnut flour cake cookie pancake waffle steak bacon sausage""",
        # health, body, activities, objects
        """ibuprofen aspirin paracetamol acetaminophen tylenol antibiotic insulin vitamin
        diabetes cancer covid flu cold asthma migraine pregnancy
        heart liver kidney lung brain skin hair tooth eye ear knee back shoulder neck
        swimming cycling jogging yoga pilates boxing tennis golf soccer football
        basketball baseball hockey cricket rugby volleyball chess poker
        guitar piano violin cello drum flute saxophone trumpet ukulele
        car truck bike bicycle motorcycle scooter
        carpet sofa mattress laptop phone tablet printer router keyboard monitor
        red blue green yellow black white purple pink brown gray grey orange
        adult child kid baby infant toddler teenager teen senior elderly
        monday tuesday wednesday thursday friday saturday sunday
        january february march april may june july august september october november december
        spring summer autumn fall winter mercury venus earth mars jupiter saturn uranus neptune
        gold silver copper iron steel aluminum plastic glass wood cotton wool fat""",
    ]
    return frozenset(w for block in lists for w in block.split())


#: Names and salient nouns (see :func:`_entities`).
ENTITIES: frozenset[str] = _entities()
#: Entity words that are also ordinary words: they count only when capitalized.
AMBIGUOUS_ENTITIES: frozenset[str] = frozenset("""
go rust swift ruby dart julia r c d fish word edge teams zoom express spring next node
bun rest mac pixel apple orange turkey chile china cold back may march august fall
mercury venus earth gold bear seal bat crane
""".split())

#: Different spellings of the same name.
ALIASES: dict[str, str] = {
    "golang": "go", "js": "javascript", "ts": "typescript", "py": "python", "k8s": "kubernetes",
    "postgres": "postgresql", "psql": "postgresql", "node.js": "node", "nodejs": "node",
    "osx": "macos", "usa": "us", "america": "us",
    "britain": "uk", "england": "uk", "nyc": "york", "la": "angeles", "sklearn": "scikit",
    "bunny": "rabbit", "puppy": "dog", "kitten": "cat", "bicycle": "bike", "grey": "gray",
    "acetaminophen": "paracetamol", "tylenol": "paracetamol", "homebrew": "brew",
    "soccer": "football", "autumn": "fall", "chatgpt": "openai", "gpt": "openai",
}

#: Capitalized words that are not names (sentence-internal capitals in prompts).
NOT_NAMES: frozenset[str] = frozenset("""
i i'm i've i'd i'll ok okay yes no please hi hello hey thanks q a faq etc vs e.g i.e
what how why when where which who can could should would will is are do does did
the a an in on of for to and or but if my your it this that
""".split())
