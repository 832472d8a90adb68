"""The notes binding (autodiscovered: ``worker.django`` imports every app's ``bindings``).

Every note goes to group ``notes``, and to ``notes-<room>``; ``secret`` is never sent.
Inbound changes need Django's model permissions (``notes.add_note`` ...), the default.
"""

from tests.django.project.notes.models import Note
from worker.django.binding import WebsocketBinding


class NoteBinding(WebsocketBinding):
    model = Note
    stream = "notes"
    fields = ["title", "body", "room"]

    @classmethod
    def group_names(cls, instance):
        return ["notes", f"notes-{instance.room}"]
