"""embeddings/services/importing.py: bulk imports validate each file like an upload and go on past rejects."""
from io import StringIO

import pytest
from django.core.management import call_command

from embeddings.models import Image
from tests import images as mk

pytestmark = pytest.mark.django_db


def test_import_skips_a_one_pixel_strip_with_its_reason_and_imports_the_rest(tmp_path, settings):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.jpg").write_bytes(mk.unique_jpeg(i))
    (folder / "strip.png").write_bytes(mk.image_bytes("PNG", (1, 60_000)))  # 321 bytes, 60k pixels
    out = StringIO()
    call_command("import_dataset", str(folder), "--format", "folder", "--collection", "f", "--no-progress", stdout=out)
    text = out.getvalue()
    assert "2 imported, 0 already present, 1 rejected" in text
    assert "rejected strip.png: Image aspect ratio too extreme" in text and "20:1" in text
    assert sorted(Image.objects.values_list("source_name", flat=True)) == ["0.jpg", "1.jpg"]
    stored = [p for p in (settings.MEDIA_ROOT / "images").rglob("*") if p.is_file()]
    assert len(stored) == 2 and all(p.suffix == ".jpg" for p in stored)
