from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    default_auto_field = "django.db.models.BigAutoField"

    def loupe_setup(self) -> list[str]:
        """`manage.py loupe_setup`: register the models shipped in models/ as active versions."""
        from training.shipped import shipped_models_register

        return shipped_models_register()
