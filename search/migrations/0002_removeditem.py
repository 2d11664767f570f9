"""RemovedItem and the triggers that fill it on every DELETE of an image or a caption.

PostgreSQL: one statement-level trigger per table (a transition table holds the deleted
rows, so a bulk delete costs one INSERT ... SELECT). SQLite: a row-level trigger. Another
backend gets no trigger; search then cannot hide a deleted id before its removal task ran
(results are still re-checked against the database, so a deleted image is never shown).
"""
import django.db.models.deletion
from django.db import migrations, models

TABLES = {"image": "embeddings_image", "caption": "embeddings_caption"}

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION search_log_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_removeditem (model_version_id, modality, item_id)
    SELECT s.model_version_id, TG_ARGV[0], o.id
    FROM removed_rows o CROSS JOIN search_searchindex s WHERE s.modality = TG_ARGV[0];
    RETURN NULL;
END $$;
"""


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FUNCTION)
        for modality, table in TABLES.items():
            schema_editor.execute(
                f"CREATE TRIGGER search_{modality}_removed AFTER DELETE ON {table} "
                f"REFERENCING OLD TABLE AS removed_rows FOR EACH STATEMENT "
                f"EXECUTE FUNCTION search_log_removed('{modality}')")
    elif vendor == "sqlite":
        for modality, table in TABLES.items():
            schema_editor.execute(
                f"CREATE TRIGGER search_{modality}_removed AFTER DELETE ON {table} BEGIN "
                f"INSERT INTO search_removeditem (model_version_id, modality, item_id) "
                f"SELECT model_version_id, '{modality}', OLD.id FROM search_searchindex "
                f"WHERE modality = '{modality}'; END")


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for modality, table in TABLES.items():
        if vendor == "postgresql":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS search_{modality}_removed ON {table}")
        elif vendor == "sqlite":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS search_{modality}_removed")
    if vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS search_log_removed()")


class Migration(migrations.Migration):

    dependencies = [
        ("embeddings", "0002_conse_v0"),
        ("search", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="RemovedItem",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("modality", models.CharField(choices=[("image", "Image"), ("caption", "Caption")], max_length=10)),
                ("item_id", models.BigIntegerField()),
                ("model_version", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                                    to="embeddings.modelversion")),
            ],
            options={
                "indexes": [models.Index(fields=["model_version", "modality"], name="search_removed_version_mod")],
            },
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
