"""manage.py import_dataset: every format, idempotent re-runs, rejected files listed with reasons."""
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from embeddings.models import Caption, Image
from tests import images as mk
from tests.conftest import require_flickr8k

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command("import_dataset", *map(str, args), "--no-progress", stdout=out)
    return out.getvalue()


@pytest.fixture
def photo_dir(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.jpg").write_bytes(mk.unique_jpeg(i))
    (d / "bad.jpg").write_bytes(mk.HTML)
    return d


def test_folder_imports_every_image_and_lists_rejects(photo_dir):
    out = run(photo_dir, "--format", "folder", "--collection", "f")
    assert "3 imported, 0 already present, 1 rejected" in out and "bad.jpg" in out
    assert Image.objects.filter(collection__name="f").count() == 3
    again = run(photo_dir, "--format", "folder", "--collection", "f")
    assert "0 imported, 3 already present" in again and "Nothing new" in again
    assert Image.objects.count() == 3


def test_csv_with_several_captions_per_image(photo_dir):
    (photo_dir / "caps.csv").write_text("image,caption\n0.jpg,a dog\n0.jpg,a brown dog\n1.jpg,a cat\nmissing.jpg,x\n")
    out = run(photo_dir / "caps.csv", "--format", "csv", "--collection", "c")
    assert "2 imported" in out and "1 rejected" in out and "missing.jpg" in out
    assert sorted(Caption.objects.values_list("text", flat=True)) == ["a brown dog", "a cat", "a dog"]
    assert Caption.objects.filter(source="imported").count() == 3
    run(photo_dir / "caps.csv", "--format", "csv", "--collection", "c")
    assert Caption.objects.count() == 3


def test_coco_and_karpathy_files(photo_dir):
    coco = {"images": [{"id": 1, "file_name": "0.jpg"}, {"id": 2, "file_name": "1.jpg"}],
            "annotations": [{"image_id": 1, "caption": "one"}, {"image_id": 2, "caption": "two"},
                            {"image_id": 2, "caption": "deux"}]}
    (photo_dir / "coco.json").write_text(json.dumps(coco))
    assert "2 imported" in run(photo_dir / "coco.json", "--format", "coco", "--collection", "coco")
    assert Caption.objects.filter(image__collection__name="coco").count() == 3
    karpathy = {"images": [{"filename": "2.jpg", "split": "val", "sentences": [{"raw": "three"}]},
                           {"filename": "0.jpg", "split": "restval", "sentences": [{"raw": "zero"}]}]}
    (photo_dir / "dataset_x.json").write_text(json.dumps(karpathy))
    run(photo_dir / "dataset_x.json", "--format", "coco", "--collection", "k")
    splits = dict(Image.objects.filter(collection__name="k").values_list("source_name", "split"))
    assert splits == {"2.jpg": "dev", "0.jpg": "train"}


def test_bad_layout_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="Flickr8k.token.txt"):
        run(tmp_path, "--format", "flickr8k", "--collection", "x")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CommandError, match="Cannot read"):
        run(tmp_path / "bad.json", "--format", "coco", "--collection", "x")


def test_flickr8k_small_layout_records_splits(tmp_path):
    (tmp_path / "images").mkdir()
    for i in range(3):
        (tmp_path / "images" / f"{i}.jpg").write_bytes(mk.unique_jpeg(i + 50))
    (tmp_path / "Flickr8k.token.txt").write_text(
        "".join(f"{i}.jpg#{n}\tcaption {n} of {i} .\n" for i in range(3) for n in range(5)))
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("0.jpg\n1.jpg\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("2.jpg\n")
    run(tmp_path, "--format", "flickr8k", "--collection", "f8")
    splits = dict(Image.objects.values_list("source_name", "split"))
    assert splits == {"0.jpg": "train", "1.jpg": "train", "2.jpg": "dev"}
    assert Caption.objects.count() == 15


@pytest.mark.slow
def test_full_flickr8k_import_twice_without_duplicates():
    """7,000 files, 35,000 captions; two of the files are the same bytes (2851198725_37b6027625 and
    3050606344_af711c726c), so they are one image carrying both files' 10 captions."""
    root = require_flickr8k()
    out = StringIO()
    call_command("import_dataset", str(root), "--format", "flickr8k", "--collection", "flickr8k", "--json",
                 "--no-progress", stdout=out)
    first = json.loads(out.getvalue())
    assert first["imported"] + first["already_present"] == 7000 and first["rejected"] == 0
    assert Image.objects.count() == 6999 and Caption.objects.count() == 35000
    assert Image.objects.filter(split="train").count() == 5999 and Image.objects.filter(split="dev").count() == 1000
    assert Image.objects.exclude(thumbnail="").count() == 6999
    out = StringIO()
    call_command("import_dataset", str(root), "--format", "flickr8k", "--collection", "flickr8k", "--json",
                 "--no-progress", stdout=out)
    second = json.loads(out.getvalue())
    assert second["imported"] == 0 and second["already_present"] == 7000 and second["captions_added"] == 0
    assert Image.objects.count() == 6999 and Caption.objects.count() == 35000
