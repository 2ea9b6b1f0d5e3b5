"""Generate phototag/tagging/data/imagenet_tags.json: photo-friendly tags for the 1000 ImageNet classes.

Dev-time only (CI never runs it; the JSON it writes is committed). Needs WordNet 3.0, e.g. Debian's
``wordnet-base`` package (``apt-get install wordnet-base`` → ``/usr/share/wordnet/data.noun``), and timm
(for the class order, ``timm/data/_info/imagenet_synsets.txt``). ImageNet ids ``nXXXXXXXX`` are WordNet 3.0
noun offsets.

For each class it picks one tag name:

1. a manual override (:data:`NAME_OVERRIDES`) where WordNet's lemmas are odd or collide;
2. else the first lemma that ends with the name of one of its WordNet ancestors ("tabby, tabby cat" →
   "tabby cat", "basset, basset hound" → "basset hound": the compound says what the thing is);
3. else the first lemma (WordNet lists the most common one first).

and it places the class under the most specific of a curated set of general categories (:data:`PARENTS`:
animal, dog, cat, vehicle, food, building, …), found by walking up the WordNet hypernyms
(:func:`nearest_parent`).
The categories themselves form a tree the same way (cat → mammal → animal). Abstract WordNet nodes
("whole", "organism", "placental") are never tags.

For plain-language search (``~"a cup of coffee"``) it also records, per tag, WordNet's other lemmas of the
synset (``synonyms``: espresso has none, "tabby cat" has "tabby") and its gloss (``definitions``: "strong
black coffee brewed by forcing steam under pressure through powdered coffee beans").

Chinese names (``names_zh``) come from the Recognize Anything tag lists (``ram_tag_list.txt`` and
``ram_tag_list_chinese.txt``, Apache-2.0, the same files RAM/RAM++ users install; read from
``../shared/ram-data`` or ``--ram-tags``): a tag gets the Chinese name of the RAM tag spelled like its name,
else like one of its synset's lemmas (the same meaning). Where RAM gives alternatives ("饮品/喝") the first is
kept. 455 of the 1000 classes and 57 of the 70 categories get one, so ``search 猫`` finds every cat.
WordNet 3.0 is under the WordNet licence (free to use, copy and distribute with its copyright notice, which
``imagenet_tags.json``'s ``source`` names).

Usage: python tools/gen_imagenet_tags.py [--wordnet /usr/share/wordnet] [--ram-tags DIR] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "phototag" / "tagging" / "data" / "imagenet_tags.json"
RAM_TAGS = REPO.parent / "shared" / "ram-data" / "ram" / "data"
#: the face tags the built-in tagger adds itself (see phototag.tagging.builtin)
FACE_TAGS = {
    "people": ("two or more persons", "people in a group or crowd"),
    "portrait": ("a photo of one person's face", "a picture of a person, usually showing the face"),
}

#: curated general categories: WordNet 3.0 noun offset → tag name (order = priority on ties)
PARENTS: dict[str, str] = {
    # living things
    "00007846": "person",
    "00015388": "animal",
    "01861778": "mammal",
    "02084071": "dog",
    "02121808": "cat",  # domestic cat (tabby, Persian, Siamese …)
    "02127808": "big cat",  # lion, tiger, leopard …
    "02131653": "bear",
    "02484322": "monkey",
    "02470325": "ape",
    "02329401": "rodent",
    "01503061": "bird",
    "01604330": "bird of prey",
    "02512053": "fish",
    "01482330": "shark",
    "02159955": "insect",
    "02274259": "butterfly",
    "02164464": "beetle",
    "01772222": "spider",
    "01661091": "reptile",
    "01726692": "snake",
    "01674464": "lizard",
    "01662784": "turtle",
    "01627424": "amphibian",
    "01639765": "frog",
    "01974773": "crustacean",
    "00017222": "plant",
    "11669921": "flower",
    "12992868": "fungus",
    # food and drink
    "00021265": "food",  # food, nutrient: drinks, dishes …
    "07555863": "food",  # food, solid food: produce, baked goods …
    "07881800": "drink",
    "07705931": "fruit",
    "07707451": "vegetable",
    "07557434": "dish",
    "07609840": "dessert",
    # vehicles
    "04524313": "vehicle",
    "02958343": "car",
    "04490091": "truck",
    "02924116": "bus",
    "03684823": "locomotive",
    "02834778": "bicycle",
    "04530566": "boat",  # vessel, watercraft (ships, boats, canoes …)
    "02686568": "aircraft",
    # buildings and places
    "04341686": "structure",
    "02913152": "building",
    "03259505": "house",
    "03953416": "place of worship",
    "02898711": "bridge",
    "03743902": "monument",
    "04202417": "shop",
    "09287968": "landscape",  # geological formation: cliff, valley, volcano, seashore …
    # things
    "03405725": "furniture",
    "04161981": "seat",
    "03051540": "clothing",
    "03380867": "footwear",
    "03502509": "headwear",
    "02773037": "bag",
    "03800933": "musical instrument",
    "04285146": "sports equipment",
    "02778669": "ball",
    "04451818": "tool",
    "03278248": "electronics",
    "03082979": "computer",
    "04401088": "phone",
    "03094503": "container",
    "02876657": "bottle",
    "03621049": "kitchen utensil",
    "03528263": "home appliance",
    "04565375": "weapon",
    "04437953": "timepiece",
    "03636248": "lamp",
}

#: class synset → tag name, where the rule above gives an odd or colliding name
NAME_OVERRIDES: dict[str, str] = {
    "n02012849": "crane (bird)",  # vs. the machine crane n03126707
    "n03710637": "dance tights",  # "maillot": tights for dancers; the other maillot is a swimsuit
    "n02704792": "amphibious vehicle",  # WordNet: amphibian (collides with the animal category)
    "n03028079": "church",  # not "church building"
    "n03642806": "laptop",  # not "laptop computer"
    "n04404412": "television",  # not "television system"
    "n03710721": "swimsuit",  # "maillot, tank suit": a woman's one-piece bathing suit
    "n02814533": "station wagon",  # WordNet: estate car
    "n02797295": "wheelbarrow",  # WordNet: garden cart
    "n02747177": "trash can",  # WordNet: ash bin
    "n03595614": "T-shirt",  # WordNet: tee shirt
    "n02415577": "bighorn sheep",  # WordNet: Rocky Mountain sheep
    "n02486261": "patas monkey",  # WordNet: hussar monkey
    "n04399382": "teddy bear",  # WordNet: teddy
    "n01514668": "rooster",  # WordNet: cock
    "n02134084": "polar bear",  # WordNet: ice bear
    "n02389026": "horse",  # WordNet: sorrel
    "n02395406": "pig",  # WordNet: hog
    "n02509815": "red panda",  # WordNet: lesser panda
    "n02655020": "pufferfish",  # WordNet: puffer
    "n03793489": "computer mouse",  # WordNet: mouse
    "n03954731": "hand plane",  # WordNet: plane
    "n03594734": "jeans",  # WordNet: jean
    "n04517823": "vacuum cleaner",  # WordNet: vacuum
    "n04554684": "washing machine",  # WordNet: washer
    "n02992529": "mobile phone",  # WordNet: cellular telephone
    "n04141076": "saxophone",  # WordNet: sax
    "n02112137": "chow chow",  # WordNet: chow
    "n02098413": "Lhasa apso",  # WordNet: Lhasa
    "n02111129": "Leonberger",  # WordNet: Leonberg
    "n02102040": "English springer spaniel",  # WordNet: English springer
    "n02276258": "red admiral",  # WordNet: admiral
    "n13133613": "ear of corn",  # WordNet: ear
    "n12620546": "rose hip",  # WordNet: hip
    "n02930766": "taxi",  # WordNet: cab
    "n15075141": "toilet paper",  # WordNet: toilet tissue
    "n03337140": "filing cabinet",  # WordNet: file
    "n03929660": "guitar pick",  # WordNet: pick
    "n04118776": "ruler",  # WordNet: rule
    "n04243546": "slot machine",  # WordNet: slot
    "n03854065": "pipe organ",  # WordNet: organ
    "n03991062": "flowerpot",  # WordNet: pot
    "n03825788": "bottle nipple",  # WordNet: nipple
    "n03673027": "ocean liner",  # WordNet: liner
    "n01817953": "African grey parrot",  # WordNet: African grey
    "n01608432": "kite (bird)",  # WordNet: kite
    "n01601694": "dipper",  # WordNet: water ouzel
}

#: category → its category, where WordNet's nearest curated ancestor is missing or odd
CATEGORY_PARENT: dict[str, str] = {
    "bus": "vehicle",  # WordNet: public transport → conveyance
    "footwear": "clothing",  # WordNet: covering
    "computer": "electronics",  # WordNet: machine
    "ball": "sports equipment",  # WordNet: game equipment
}

#: class tag → category, for classes WordNet files only under abstract nodes (plant parts, roofs …)
CLASS_PARENT: dict[str, str] = {
    **dict.fromkeys(["ski", "racket", "puck"], "sports equipment"),
    "bullet train": "vehicle",
    **dict.fromkeys(
        ["radio", "microphone", "computer mouse", "remote control", "projector", "hard disc", "Polaroid camera",
         "reflex camera", "television", "loudspeaker", "photocopier"],
        "electronics",
    ),
    **dict.fromkeys(["rapeseed", "corn", "acorn", "rose hip", "buckeye", "ear of corn"], "plant"),
    **dict.fromkeys(["cloak", "bib"], "clothing"),
    **dict.fromkeys(["dome", "thatch", "tile roof", "bell cote", "vault"], "building"),
    **dict.fromkeys(["stove", "space heater", "electric fan"], "home appliance"),
}


def read_wordnet(wordnet_dir: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """offset → lemmas (spaces, WordNet order), offset → hypernym offsets (incl. instance-of)."""
    lemmas, hypernyms, _ = read_wordnet_glosses(wordnet_dir)
    return lemmas, hypernyms


def read_wordnet_glosses(
    wordnet_dir: Path,
) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, str]]:
    """As :func:`read_wordnet`, plus offset → definition (the gloss without its quoted examples)."""
    lemmas: dict[str, list[str]] = {}
    hypernyms: dict[str, list[str]] = {}
    glosses: dict[str, str] = {}
    with open(wordnet_dir / "data.noun", encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split(" ")
            offset, n_words = fields[0], int(fields[3], 16)
            lemmas[offset] = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
            p = 4 + 2 * n_words
            hyper = []
            for i in range(int(fields[p])):
                symbol, target, pos = fields[p + 1 + 4 * i : p + 4 + 4 * i]
                if symbol in ("@", "@i") and pos == "n":
                    hyper.append(target)
            hypernyms[offset] = hyper
            gloss = line.split(" | ", 1)[1].strip() if " | " in line else ""
            glosses[offset] = gloss.split('; "', 1)[0].strip().rstrip(";").strip()
    return lemmas, hypernyms, glosses


def clean_lemma(lemma: str) -> str:
    """WordNet marks some adjective-like lemmas with a sense suffix: "bulletproof_vest(a)" → no suffix."""
    return lemma.split("(")[0].strip() if lemma.endswith(")") and "(" in lemma and " (" not in lemma else lemma


def read_ram_names(folder: Path) -> dict[str, str]:
    """lower-cased RAM tag name → its Chinese name (the first of "a/b" alternatives); {} if absent."""
    en, zh = folder / "ram_tag_list.txt", folder / "ram_tag_list_chinese.txt"
    if not (en.is_file() and zh.is_file()):
        return {}
    names: dict[str, str] = {}
    for name, chinese in zip(en.read_text("utf-8").splitlines(), zh.read_text("utf-8").splitlines()):
        chinese = chinese.split("/")[0].strip()
        if name.strip() and chinese:
            names.setdefault(name.strip().lower(), chinese)
    return names


def noun_sense_counts(wordnet_dir: Path) -> dict[str, int]:
    """lower-cased noun lemma (spaces) → how many noun synsets it names (``index.noun``)."""
    counts: dict[str, int] = {}
    with open(wordnet_dir / "index.noun", encoding="utf-8") as f:
        for line in f:
            if not line.startswith("  "):
                fields = line.split(" ")
                counts[fields[0].replace("_", " ").lower()] = int(fields[2])
    return counts


def describe(
    data: dict, lemmas: dict[str, list[str]], glosses: dict[str, str], ram: dict[str, str], senses: dict[str, int]
) -> dict:
    """synonyms, definitions and Chinese names of every tag of ``data`` (classes, categories, face tags).

    A Chinese name is taken through a synonym only when that word has a single noun sense in WordNet
    ("crane" is also the machine: the bird must not become 起重机).
    """
    synsets: dict[str, str] = {}  # tag → WordNet offset
    for synset, name in data["classes"]:
        synsets.setdefault(name, synset[1:])
    for offset, name in PARENTS.items():
        synsets.setdefault(name, offset)
    synonyms: dict[str, list[str]] = {}
    definitions: dict[str, str] = {}
    names_zh: dict[str, str] = {}
    tags = list(dict.fromkeys([n for _, n in data["classes"]] + list(data["parents"].values()) + ["person"]))
    for name in tags:
        offset = synsets.get(name)
        own = [clean_lemma(lemma) for lemma in lemmas[offset]] if offset else []
        others = [w for w in dict.fromkeys(own) if w.lower() != name.lower()]
        if others:
            synonyms[name] = others
        if offset and glosses.get(offset):
            definitions[name] = glosses[offset]
        for candidate in [name, *(w for w in own if senses.get(w.lower()) == 1)]:
            if candidate.lower() in ram:
                names_zh[name] = ram[candidate.lower()]
                break
    for name, (synonym, definition) in FACE_TAGS.items():
        synonyms[name] = [synonym]
        definitions[name] = definition
        if name in ram:
            names_zh[name] = ram[name]
    return {"synonyms": synonyms, "definitions": definitions, "names_zh": names_zh}


def ancestors(offset: str, hypernyms: dict[str, list[str]]) -> list[str]:
    """All hypernyms, nearest first (breadth-first; WordNet's first-listed hypernym wins ties)."""
    seen: list[str] = []
    queue = deque([offset])
    while queue:
        for parent in hypernyms[queue.popleft()]:
            if parent not in seen:
                seen.append(parent)
                queue.append(parent)
    return seen


def choose_name(synset: str, lemmas: dict[str, list[str]], hypernyms: dict[str, list[str]]) -> str:
    if synset in NAME_OVERRIDES:
        return NAME_OVERRIDES[synset]
    own = lemmas[synset[1:]]
    ancestor_names = {lemma.lower() for a in ancestors(synset[1:], hypernyms) for lemma in lemmas[a]}
    for lemma in own[1:]:
        words = lemma.lower().split(" ")
        if lemma.startswith(own[0] + " ") and any(
            " ".join(words[i:]) in ancestor_names for i in range(1, len(words))
        ):
            return lemma
    return own[0]


def nearest_parent(offset: str, hypernyms: dict[str, list[str]]) -> str | None:
    """The most specific curated category above ``offset``.

    WordNet has multiple inheritance: "domestic cat" is a "true cat" (→ feline → … → mammal → animal)
    and a "domestic animal" (→ animal). The nearest category by steps would be "animal"; we take the
    category with the most other candidates above it ("mammal"), nearest first on ties.
    """
    candidates = [a for a in ancestors(offset, hypernyms) if a in PARENTS]
    if not candidates:
        return None
    above = {c: set(ancestors(c, hypernyms)) for c in candidates}
    best = max(candidates, key=lambda c: sum(other in above[c] for other in candidates))
    return PARENTS[best]


def build(wordnet_dir: Path, synsets: list[str], ram_dir: Path = RAM_TAGS) -> dict:
    lemmas, hypernyms, glosses = read_wordnet_glosses(wordnet_dir)
    missing = [s for s in synsets if s[1:] not in lemmas] + [o for o in PARENTS if o not in lemmas]
    missing += [s for s in NAME_OVERRIDES if s not in synsets]
    if missing:
        raise SystemExit(f"not in WordNet 3.0 data.noun: {missing[:10]}")

    classes = [[s, choose_name(s, lemmas, hypernyms)] for s in synsets]
    parents: dict[str, str] = {}
    for offset, name in PARENTS.items():
        parent = CATEGORY_PARENT.get(name) or nearest_parent(offset, hypernyms)
        if parent is not None:
            if parents.get(name, parent) != parent:
                raise SystemExit(f"category {name!r} would get two parents: {parents[name]!r} and {parent!r}")
            parents[name] = parent
    names = {name for _, name in classes}
    unknown = [n for n in CLASS_PARENT if n not in names] + [
        p for p in [*CLASS_PARENT.values(), *CATEGORY_PARENT.values(), *CATEGORY_PARENT] if p not in PARENTS.values()
    ]
    if unknown:
        raise SystemExit(f"CLASS_PARENT / CATEGORY_PARENT name unknown tags: {unknown}")
    for synset, name in classes:
        parent = CLASS_PARENT.get(name) or nearest_parent(synset[1:], hypernyms)
        if parent is not None and parent != name:
            if parents.get(name, parent) != parent:
                raise SystemExit(f"{name!r} would get two parents: {parents[name]!r} and {parent!r}")
            parents[name] = parent

    # names are unique case-insensitively, except a class named like a category (they are one tag)
    seen: dict[str, str] = {}
    for synset, name in classes:
        key = name.lower()
        if key in seen:
            raise SystemExit(f"tag {name!r} used by {seen[key]} and {synset}: add a NAME_OVERRIDES entry")
        seen[key] = synset
    by_lower = {n.lower(): n for n in PARENTS.values()}
    for synset, name in classes:
        if name.lower() in by_lower and by_lower[name.lower()] != name:
            raise SystemExit(f"class {synset} {name!r} differs from category {by_lower[name.lower()]!r} only by case")

    used = {p for p in parents.values()} | {n for _, n in classes}
    ram = read_ram_names(ram_dir)
    if not ram:
        raise SystemExit(f"no RAM tag lists in {ram_dir} (ram_tag_list.txt, ram_tag_list_chinese.txt): --ram-tags DIR")
    data = {
        "format": 1,
        "source": "WordNet 3.0 hypernyms, lemmas and glosses (Debian wordnet-base; WordNet 3.0 Copyright 2006 by "
        "Princeton University, WordNet licence) over timm's imagenet_synsets.txt; Chinese names from the "
        "Recognize Anything tag lists (Apache-2.0); generated by tools/gen_imagenet_tags.py",
        "classes": classes,
        "parents": {k: parents[k] for k in sorted(parents) if k in used or k in parents.values()},
    }
    data.update(describe(data, lemmas, glosses, ram, noun_sense_counts(wordnet_dir)))
    return data


def report(data: dict, wordnet_dir: Path) -> None:
    lemmas, _ = read_wordnet(wordnet_dir)
    counts: dict[str, int] = {}
    for _, name in data["classes"]:
        node = data["parents"].get(name)
        while node is not None:
            counts[node] = counts.get(node, 0) + 1
            node = data["parents"].get(node)
    for offset, name in PARENTS.items():
        print(f"{counts.get(name, 0):4d}  {name} ({', '.join(lemmas[offset][:3])}) → {data['parents'].get(name)}")
    orphans = [n for _, n in data["classes"] if n not in data["parents"]]
    print(f"{len(orphans)} classes without a category, e.g. {orphans[:30]}")
    renamed = [(s, n) for s, n in data["classes"] if n != lemmas[s[1:]][0]]
    print(f"{len(renamed)} classes not named by their first lemma:")
    for s, n in renamed:
        print(f"  {s} {n!r} ← {', '.join(lemmas[s[1:]])}")


def to_json(data: dict) -> str:
    """Stable, diff-friendly JSON: one class and one parent link per line."""
    dump = lambda value: json.dumps(value, ensure_ascii=False)  # noqa: E731
    classes = ",\n".join(f"    {dump(c)}" for c in data["classes"])
    parents = ",\n".join(f"    {dump(k)}: {dump(v)}" for k, v in data["parents"].items())
    extra = "".join(
        f',\n  "{key}": {{\n' + ",\n".join(f"    {dump(k)}: {dump(v)}" for k, v in data[key].items()) + "\n  }"
        for key in ("synonyms", "definitions", "names_zh")
        if key in data
    )
    return (
        f'{{\n  "format": {data["format"]},\n  "source": {dump(data["source"])},\n'
        f'  "classes": [\n{classes}\n  ],\n  "parents": {{\n{parents}\n  }}{extra}\n}}\n'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--ram-tags", type=Path, default=RAM_TAGS, help="folder of ram_tag_list*.txt")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--report", action="store_true", help="print category sizes and renamed classes")
    parser.add_argument("--check", action="store_true", help="fail if the committed file is out of date")
    args = parser.parse_args(argv)

    import timm

    synset_file = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    synsets = synset_file.read_text().split()
    if len(synsets) != 1000:
        raise SystemExit(f"{synset_file}: expected 1000 synsets, found {len(synsets)}")
    data = build(args.wordnet, synsets, args.ram_tags)
    text = to_json(data)
    if args.report:
        report(data, args.wordnet)
    if args.check:
        if not args.out.exists() or args.out.read_text(encoding="utf-8") != text:
            print(f"{args.out} is out of date; run tools/gen_imagenet_tags.py", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=".imagenet_tags.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({len(data['classes'])} classes, {len(set(data['parents'].values()))} categories)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
