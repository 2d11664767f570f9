from django.apps import AppConfig


class EmbeddingsConfig(AppConfig):
    name = "embeddings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from embeddings import encoding
        from embeddings.services import processing

        processing.register_step("encode", encoding.step_encode)
        processing.register_step("caption", encoding.step_caption)
