"""ConSE zero-shot is version 0 of kind embedding: a fresh install searches with it."""
from django.db import migrations

CONSE_CONFIG = {"k": 5, "temperature": 2.0, "prompts": ["{}"],  # tuned on Flickr8k dev (bench/results/conse.md)
                "classes": "ImageNet-1k (embeddings/ml/data/imagenet_classes.txt)"}


def create(apps, schema_editor):
    ModelVersion = apps.get_model("embeddings", "ModelVersion")
    if ModelVersion.objects.filter(kind="embedding", family="conse").exists():
        return
    active = ModelVersion.objects.filter(kind="embedding", status="active").exists()
    ModelVersion.objects.create(
        kind="embedding", name="conse-v0", family="conse", status="retired" if active else "active",
        config=CONSE_CONFIG, dim=384,
        encoders={"image": "efficientnet-lite0 (ImageNet)", "text": "all-MiniLM-L6-v2"},
        metrics={},
    )


class Migration(migrations.Migration):
    dependencies = [("embeddings", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
