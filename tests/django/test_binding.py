"""Model data binding (``worker.django.binding``), in process: memory layer, test tools.

Outbound changes are sent on commit; the tests run inside a rolled-back transaction
(the ``db`` fixture), so they run the commit callbacks with
``TestCase.captureOnCommitCallbacks(execute=True)``.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import TestCase

from tests.django.project.notes.bindings import NoteBinding
from tests.django.project.notes.models import Note
from worker.django.binding import Binding, WebsocketBinding, WebsocketBindingWithMembers
from worker.django.testing import Client, WSClient, apply_routes
from worker.routing import route

on_commit = TestCase.captureOnCommitCallbacks


def listener(*groups: str) -> Client:
    client = Client()
    for group in groups:
        client.join_group(group)
    return client


def frames(client: Client) -> list[dict]:
    """Every frame waiting for ``client``, decoded (``{"stream", "payload"}``)."""
    out = []
    while (reply := client.receive()) is not None:
        out.append(json.loads(reply["text"]))
    return out


def payloads(client: Client) -> list[tuple[str, str]]:
    return [(f["payload"]["action"], f["payload"]["data"]["title"]) for f in frames(client)]


def grant(user: User, *codenames: str) -> None:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


def test_the_notes_binding_was_autodiscovered_and_registered():
    """worker.django's ready() imported the notes app's bindings module and connected the
    binding to the model's signals; its consumer is a stream consumer class."""
    from django.db.models.signals import post_save

    assert NoteBinding._registered
    assert any(NoteBinding._uid("post_save") == entry[0][0] for entry in post_save.receivers)
    assert NoteBinding.consumer.binding_class is NoteBinding


def test_a_new_instance_is_announced_to_its_groups_after_commit(db):
    """Saving a new note sends one create frame on the notes stream to each of its groups,
    with the binding's fields only (not ``secret``) -- and only once the transaction
    commits."""
    everyone, lobby, attic = listener("notes"), listener("notes-lobby"), listener("notes-attic")
    with on_commit(execute=True):
        note = Note.objects.create(title="hi", body="there", secret="s3cret")
        assert everyone.receive() is None  # not before the commit
    [frame] = frames(everyone)
    assert frame == {"stream": "notes", "payload": {
        "action": "create", "pk": note.pk, "model": "notes.note",
        "data": {"title": "hi", "body": "there", "room": "lobby"}}}
    assert frames(lobby) == [frame]
    assert attic.receive() is None


def test_moving_between_groups_sends_delete_create_and_update(db):
    """An update that changes group_names tells the groups it left ``delete``, the groups
    it joined ``create`` and the groups it stayed in ``update`` (the old groups come
    from the database row, not the changed instance)."""
    note = Note.objects.create(title="moving")
    everyone, lobby, attic = listener("notes"), listener("notes-lobby"), listener("notes-attic")
    with on_commit(execute=True):
        note.room = "attic"
        note.save()
    assert payloads(lobby) == [("delete", "moving")]
    assert payloads(attic) == [("create", "moving")]
    assert payloads(everyone) == [("update", "moving")]


def test_delete_is_announced_with_the_deleted_row(db):
    """Deleting sends ``delete`` with the row's pk and data to every group it was in; a
    queryset delete announces each row."""
    first = Note.objects.create(title="a")
    second = Note.objects.create(title="b", room="attic")
    everyone = listener("notes")
    with on_commit(execute=True):
        pk = first.pk
        first.delete()
    [frame] = frames(everyone)
    assert frame["payload"]["action"] == "delete" and frame["payload"]["pk"] == pk
    with on_commit(execute=True):
        Note.objects.filter(pk=second.pk).delete()
    assert payloads(everyone) == [("delete", "b")]


def test_a_rolled_back_change_is_never_announced(db):
    """A change inside a transaction that is rolled back sends nothing."""
    everyone = listener("notes")
    with on_commit(execute=True) as callbacks, pytest.raises(RuntimeError), \
            transaction.atomic():
        Note.objects.create(title="never")
        raise RuntimeError("roll it back")
    assert callbacks == []
    assert everyone.receive() is None


def connect_notes(user: User | None = None) -> WSClient:
    client = WSClient()
    if user is not None:
        client.force_login(user)
    assert client.connect("/ws/notes/") == {"accept": True}
    return client


def send_notes(client: WSClient, payload: dict) -> None:
    with on_commit(execute=True):
        client.send(json={"stream": "notes", "payload": payload})


def test_inbound_create_needs_the_add_permission(db):
    """Over the demultiplexer, a create from an anonymous socket or a user without
    ``notes.add_note`` is refused (answered on the stream, nothing saved); with the
    permission the note is created (only the binding's fields taken) and the create is
    announced to the group the socket is in."""
    anonymous = connect_notes()
    send_notes(anonymous, {"action": "create", "data": {"title": "nope"}})
    assert frames(anonymous) == [{"stream": "notes", "payload": {
        "action": "create", "pk": None, "model": "notes.note", "error": "permission denied"}}]

    alice = User.objects.create_user("alice")
    socket = connect_notes(alice)
    send_notes(socket, {"action": "create", "data": {"title": "nope"}})
    assert frames(socket)[0]["payload"]["error"] == "permission denied"
    assert not Note.objects.exists()

    grant(alice, "add_note")
    send_notes(socket, {"action": "create",
                        "data": {"title": "yes", "room": "attic", "secret": "injected"}})
    note = Note.objects.get()
    assert (note.title, note.room, note.secret) == ("yes", "attic", "")
    assert payloads(socket) == [("create", "yes")]
    assert payloads(anonymous) == [("create", "yes")]


def test_inbound_update_and_delete(db):
    """With change/delete permissions an update changes only the fields it names and a
    delete removes the row; both are announced. Without them nothing changes."""
    note = Note.objects.create(title="old", body="keep")
    bob = User.objects.create_user("bob")
    socket = connect_notes(bob)
    send_notes(socket, {"action": "update", "pk": note.pk, "data": {"title": "new"}})
    assert frames(socket)[0]["payload"]["error"] == "permission denied"
    grant(bob, "change_note", "delete_note")
    send_notes(socket, {"action": "update", "pk": note.pk, "data": {"title": "new"}})
    note.refresh_from_db()
    assert (note.title, note.body) == ("new", "keep")
    assert payloads(socket) == [("update", "new")]
    send_notes(socket, {"action": "delete", "pk": note.pk})
    assert not Note.objects.exists()
    assert payloads(socket) == [("delete", "new")]


def test_inbound_errors_are_answered_and_change_nothing(db):
    """Malformed payloads, unknown rows and invalid data are answered with an error on the
    stream (field errors under ``errors``) and leave the database as it was."""
    carol = User.objects.create_user("carol")
    grant(carol, "add_note", "change_note")
    socket = connect_notes(carol)
    cases = [
        ({"action": "explode"}, "action must be one of"),
        ({"action": "update", "data": {"title": "x"}}, "update needs a pk"),
        ({"action": "update", "pk": 999, "data": {"title": "x"}}, "no notes.note with pk 999"),
        ({"action": "create", "data": "title"}, "data must be a JSON object"),
        ({"action": "create", "data": {"title": "x" * 101}}, "invalid data"),
    ]
    for payload, error in cases:
        send_notes(socket, payload)
        [frame] = frames(socket)
        assert error in frame["payload"]["error"], (payload, frame)
    send_notes(socket, {"action": "create", "data": {"title": "x" * 101}})
    assert "title" in frames(socket)[0]["payload"]["errors"]
    assert not Note.objects.exists()


def test_stream_consumers_see_the_demultiplexers_user(db):
    """The demultiplexer's http_user sets message.user; the binding's stream consumer sees
    that same user on the inner message (one session load, not two)."""
    dave = User.objects.create_user("dave")
    grant(dave, "add_note")
    socket = connect_notes(dave)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        send_notes(socket, {"action": "create", "data": {"title": "q"}})
    session_reads = [q for q in queries if "django_session" in q["sql"]]
    assert len(session_reads) == 1
    assert payloads(socket) == [("create", "q")]


class PlainNoteBinding(Binding):
    """A transport-free binding: group messages are the payload dicts themselves."""

    model = "notes.Note"
    exclude = ["secret", "body"]

    @classmethod
    def group_names(cls, instance):
        return ["plain-notes"]

    def has_permission(self, user, action, pk):
        return self.message.get("token") == "let-me"


@pytest.fixture
def plain_binding():
    """PlainNoteBinding is connected for one test only."""
    PlainNoteBinding.register()
    yield PlainNoteBinding
    PlainNoteBinding.unregister()


def test_a_plain_binding_sends_payloads_and_consumes_a_channel(db, plain_binding):
    """Binding.consumer routed on an ordinary channel applies {action, pk, data} messages
    after its has_permission (here: a token in the message); its group messages are the
    bare payloads, with ``exclude``d fields left out."""
    everyone = listener("plain-notes")
    with apply_routes([route("notes.inbound", plain_binding.consumer)]), on_commit(
            execute=True):
        client = Client()
        client.send_and_consume("notes.inbound", {"action": "create", "data": {"title": "t"}})
        assert not Note.objects.exists()
        client.send_and_consume("notes.inbound", {"action": "create", "token": "let-me",
                                                  "data": {"title": "t", "body": "dropped"}})
    note = Note.objects.get()
    assert note.body == ""
    assert everyone.receive() == {"action": "create", "pk": note.pk, "model": "notes.note",
                                  "data": {"title": "t", "room": "lobby"}}
    plain_binding.unregister()
    with on_commit(execute=True):
        Note.objects.create(title="unbound")
    assert everyone.receive() is None


def test_members_are_sent_with_the_fields(db):
    """WebsocketBindingWithMembers adds send_members (attributes or methods) to data."""

    class Loud(WebsocketBindingWithMembers):
        model = Note
        stream = "loud"
        fields = ["title"]
        send_members = ["shout", "room"]

        @classmethod
        def group_names(cls, instance):
            return ["loud"]

    try:
        client = listener("loud")
        with on_commit(execute=True):
            Note.objects.create(title="quiet")
        [frame] = frames(client)
        assert frame["stream"] == "loud"
        assert frame["payload"]["data"] == {"title": "quiet", "shout": "QUIET", "room": "lobby"}
    finally:
        Loud.unregister()


def test_bindings_must_say_what_they_send():
    """A binding without fields/exclude, with unknown fields, or a WebsocketBinding
    without a stream is refused with a message naming the problem."""
    attrs = {"__module__": __name__, "model": "notes.Note"}
    with pytest.raises(ImproperlyConfigured, match="must set fields"):
        type("NoFields", (Binding,), attrs)
    with pytest.raises(ImproperlyConfigured, match=r"has no field.*colour"):
        type("BadField", (Binding,), {**attrs, "fields": ["title", "colour"]})
    with pytest.raises(ImproperlyConfigured, match="must set stream"):
        type("NoStream", (WebsocketBinding,), {**attrs, "fields": ["__all__"]})
