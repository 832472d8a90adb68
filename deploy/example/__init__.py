"""The example application served by ``make run`` (see ``app.py``)."""
