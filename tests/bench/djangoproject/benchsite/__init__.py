"""The benchmark's Django project: one settings module, three servers."""
