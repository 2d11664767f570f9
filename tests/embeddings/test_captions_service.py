"""embeddings/services/captions.py: what an upload to caption gets before any model is asked."""
from __future__ import annotations

import pytest

from project.exceptions import ApplicationError
from embeddings.services.captions import caption_generate


@pytest.mark.django_db
def test_a_bad_upload_is_a_400_even_with_no_captioner_active(user):
    """Validation comes before the model: a text file is "not an image" (400), not "no captioner" (503)."""
    with pytest.raises(ApplicationError) as caught:
        caption_generate(user=user, image_bytes=b"just some text, not a picture")
    assert caught.value.status_code == 400 and "file" in caught.value.fields
