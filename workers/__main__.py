"""``python -m workers``: the Celery worker process (see ``workers.main``)."""

from workers.main import main

main()
