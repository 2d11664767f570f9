from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "search"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # New vectors are added to the indexes, deleted images and captions removed.
        from search import receivers

        receivers.connect()
