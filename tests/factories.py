import factory
from django.contrib.auth import get_user_model

from embeddings.models import Caption, Collection, Image, ModelVersion  # noqa: F401
from tests.images import unique_jpeg


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-not-secret")


class CollectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Collection

    name = factory.Sequence(lambda n: f"collection-{n}")
    owner = factory.SubFactory(UserFactory)
    is_public = False


def make_image(collection: Collection, seed: int = 0, caption: str | None = None, **kwargs) -> Image:
    """A real image stored through the ingest service (files written to MEDIA_ROOT)."""
    import io

    from embeddings.services import image_ingest

    result = image_ingest(collection=collection, stream=io.BytesIO(unique_jpeg(seed)), filename=f"img{seed}.jpg",
                          caption=caption, user=collection.owner, enqueue=kwargs.pop("enqueue", False))
    if kwargs:
        Image.objects.filter(pk=result.image.pk).update(**kwargs)
        result.image.refresh_from_db()
    return result.image


class CaptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Caption

    text = factory.Sequence(lambda n: f"a photo of thing {n}")
    source = Caption.Source.HUMAN


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    kind = ModelVersion.Kind.EMBEDDING
    name = factory.Sequence(lambda n: f"model-{n}")
    status = ModelVersion.Status.CANDIDATE
