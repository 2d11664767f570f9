"""The demo collection: sample photos that ship inside scikit-image's and scikit-learn's packages.

No image file is copied into this repository; the captions are ours.
"""
from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from embeddings.ingest.readers import ImportItem

DEMO_COLLECTION = "demo"

# (package, file, captions)
DEMO_IMAGES: list[tuple[str, str, list[str]]] = [
    ("skimage", "astronaut.png", ["An astronaut in a white space suit poses in front of an American flag.",
                                  "A smiling woman astronaut holding a helmet."]),
    ("skimage", "coffee.png", ["A cup of coffee on a saucer with a spoon.", "A white cup of coffee on a red table."]),
    ("skimage", "chelsea.png", ["A tabby cat looking to the side.", "A close up of an orange and grey cat."]),
    ("skimage", "rocket.jpg", ["A rocket standing on the launch pad under a blue sky.",
                               "A space rocket ready for launch."]),
    ("skimage", "hubble_deep_field.jpg", ["Many distant galaxies in a dark night sky.",
                                          "A deep space photograph full of stars and galaxies."]),
    ("skimage", "motorcycle_left.png", ["A red motorcycle parked in a room in front of shelves.",
                                        "A motorbike in a workshop."]),
    ("skimage", "retina.jpg", ["A photograph of the retina of a human eye.",
                               "An orange round image of an eye's retina."]),
    ("skimage", "coins.png", ["Old coins laid out in rows on a table.", "A black and white photo of many coins."]),
    ("skimage", "camera.png", ["A man with a camera on a tripod in a field.",
                               "A black and white photo of a photographer."]),
    ("skimage", "horse.png", ["The black silhouette of a horse on a white background."]),
    ("skimage", "brick.png", ["A grey brick wall.", "Close up of bricks in a wall."]),
    ("skimage", "grass.png", ["A close up of green grass.", "Blades of grass in black and white."]),
    ("skimage", "gravel.png", ["A close up of grey gravel stones."]),
    ("skimage", "moon.png", ["The surface of the moon with craters."]),
    ("skimage", "page.png", ["A page of printed text."]),
    ("skimage", "clock_motion.png", ["A wall clock blurred by motion."]),
    ("skimage", "color.png", ["A colourful chart of coloured squares."]),
    ("skimage", "logo.png", ["A logo of a snake in blue and yellow."]),
    ("sklearn", "china.jpg", ["A Chinese temple roof with trees in front of it.",
                              "A traditional pagoda building among green trees."]),
    ("sklearn", "flower.jpg", ["A pink flower with a yellow centre.", "A close up of a pink lotus flower."]),
]

_FOLDERS = {"skimage": ("skimage", "data"), "sklearn": ("sklearn", "datasets", "images")}


def _package_dir(package: str) -> Path | None:
    spec = find_spec(_FOLDERS[package][0])
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent.joinpath(*_FOLDERS[package][1:])


def demo_items() -> list[ImportItem]:
    items = []
    for package, name, captions in DEMO_IMAGES:
        folder = _package_dir(package)
        if folder is not None and (folder / name).is_file():
            items.append(ImportItem(path=folder / name, name=name, captions=captions))
    return items
