"""No routes of its own: every ``http.request`` goes to the Django views."""

channel_routing: list = []
