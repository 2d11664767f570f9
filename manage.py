"""Django's command-line utility for Loupe."""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django
    from django.core.management import execute_from_command_line

    django.setup()
    from project import threads

    threads.pin("web" if sys.argv[1:2] == ["runserver"] else "command")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
