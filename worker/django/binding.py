"""Model data binding: model changes go out to groups; create/update/delete come in.

Subclass ``Binding`` (or ``WebsocketBinding``, for browsers through a
``WebsocketDemultiplexer``) once per model::

    class NoteBinding(WebsocketBinding):
        model = Note                      # or "notes.Note"
        stream = "notes"                  # the demultiplexer stream
        fields = ["title", "body", "room"]  # or ["__all__"]; exclude = [...] also works

        @classmethod
        def group_names(cls, instance):
            return ["notes", f"notes-{instance.room}"]

        def has_permission(self, user, action, pk):
            return user.is_authenticated

How this works:

* **Registration.** Every subclass with a ``model`` is recorded when its class
  is made, and registered once the models are loaded (at once if they
  already are): ``worker.django``'s ``ready()`` first imports every installed
  app's ``bindings`` module, then connects the recorded bindings to the model's
  ``pre_save``/``post_save``/``pre_delete``/``post_delete`` signals. A
  binding defined anywhere else must be imported at start-up (a
  ``models.py`` or an ``AppConfig.ready``) in *every* process that changes
  the model, or that process's changes go unseen.
* **Outbound.** ``pre_save`` reads the row as it is in the database (one
  query, for an update) and notes its ``group_names``; ``post_save`` computes
  them again. The difference decides what each group hears: groups the
  instance left get a ``delete``, groups it joined a ``create``, groups it
  stayed in an ``update`` (a new instance: ``create`` everywhere; a deleted
  one: ``delete`` everywhere). Payloads are made at signal time
  (``serialize``, then ``encode`` for the transport) and sent with
  ``transaction.on_commit``: a change that is rolled back is never announced,
  and one that commits is announced even if the consumer that made it fails
  afterwards (the group sends are immediate, not held by the consumer). Raw
  saves (``loaddata``) and ``QuerySet.update`` (which sends no signals) are
  not announced.
* **Inbound.** ``consumer`` applies ``{"action": "create"|"update"|"delete",
  "pk", "data"}`` payloads: ``deserialize``, then ``has_permission(user,
  action, pk)`` (by default Django's model permissions ``add``/``change``/
  ``delete``), then ``create``/``update``/``delete`` in a transaction, with
  only the binding's ``fields`` taken from ``data`` and ``full_clean`` run.
  The user is ``message.user`` (the channel session's, loaded when the
  message has a reply channel). A refused or invalid payload changes nothing;
  ``WebsocketBinding`` answers the sender with ``{"action", "pk", "model",
  "error"}`` (plus ``"errors"`` per field) on its stream.
* ``WebsocketBinding`` payloads are ``{"action", "pk", "data", "model"}``,
  wrapped as ``{"stream", "payload"}`` text frames for the demultiplexer;
  ``NoteBinding.consumer`` is a ``JsonWebsocketConsumer`` for
  ``WebsocketDemultiplexer.consumers``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, ClassVar

from django.apps import apps
from django.core import serializers
from django.core.exceptions import (
    FieldDoesNotExist,
    ImproperlyConfigured,
    ObjectDoesNotExist,
    ValidationError,
)
from django.core.serializers.base import DeserializationError
from django.db import transaction
from django.db.models import signals as model_signals

from asgi_spec import formats
from worker.channels import Group
from worker.consumers import WebsocketMultiplexer
from worker.django.auth import channel_session_user
from worker.django.consumers import JsonWebsocketConsumer

__all__ = [
    "ACTIONS",
    "CREATE",
    "DELETE",
    "UPDATE",
    "Binding",
    "BindingError",
    "WebsocketBinding",
    "WebsocketBindingWithMembers",
    "register_all",
]

logger = logging.getLogger("worker.django.binding")

CREATE = "create"
UPDATE = "update"
DELETE = "delete"
ACTIONS = (CREATE, UPDATE, DELETE)
#: The Django permission codename prefix each action needs by default.
PERMISSIONS = {CREATE: "add", UPDATE: "change", DELETE: "delete"}

_lock = threading.RLock()
_recorded: list[type[Binding]] = []
_pending: list[type[Binding]] = []
_STASH = "_switchboard_binding_groups"


class BindingError(ValueError):
    """An inbound payload that cannot be applied; the message says why."""

    def __init__(self, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.errors = errors


class Binding:
    """Binds one model to groups (outbound) and to a consumer (inbound)."""

    #: The model class, or ``"app_label.ModelName"``.
    model: ClassVar[Any] = None
    #: The stream name (used by ``WebsocketBinding``).
    stream: ClassVar[str | None] = None
    #: The fields sent out and accepted in: names, or ``["__all__"]``.
    fields: ClassVar[Sequence[str] | None] = None
    #: Fields never sent nor accepted (with ``fields`` or instead of it).
    exclude: ClassVar[Sequence[str] | None] = None
    #: The ``CHANNEL_LAYERS`` alias the group sends go to.
    channel_layer_alias: ClassVar[str] = "default"
    #: Run ``full_clean()`` before saving inbound changes.
    validate: ClassVar[bool] = True

    #: Set on each inbound run.
    message: Any = None
    user: Any = None
    kwargs: dict[str, Any]

    _registered: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._registered = False
        if cls.model is None:
            return
        if apps.models_ready:
            cls.register()
        with _lock:
            _recorded.append(cls)
            if not apps.models_ready:  # registered by worker.django's ready()
                _pending.append(cls)

    # -- registration -----------------------------------------------------------

    @classmethod
    def model_class(cls) -> Any:
        """The bound model class (``model`` resolved if it is a string)."""
        if isinstance(cls.model, str):
            try:
                return apps.get_model(cls.model)
            except (LookupError, ValueError) as exc:
                raise ImproperlyConfigured(
                    f"{cls.__qualname__}.model = {cls.model!r}: {exc}") from None
        return cls.model

    @classmethod
    def model_label(cls) -> str:
        """``"app_label.modelname"``, the ``model`` of payloads."""
        return cls.model_class()._meta.label_lower

    @classmethod
    def _uid(cls, signal: str) -> str:
        return f"switchboard-binding:{cls.__module__}.{cls.__qualname__}:{signal}"

    @classmethod
    def _signals(cls) -> list[tuple[Any, Callable[..., None], str]]:
        return [(model_signals.pre_save, cls._on_pre_save, "pre_save"),
                (model_signals.post_save, cls._on_post_save, "post_save"),
                (model_signals.pre_delete, cls._on_pre_delete, "pre_delete"),
                (model_signals.post_delete, cls._on_post_delete, "post_delete")]

    @classmethod
    def check_config(cls) -> None:
        """Raise ``ImproperlyConfigured`` naming what is wrong with this binding."""
        model = cls.model_class()
        if cls.fields is None and cls.exclude is None:
            raise ImproperlyConfigured(
                f"{cls.__qualname__} must set fields (a list of field names, or "
                "['__all__']) or exclude: nothing is sent without saying what")
        names = {f.name for f in model._meta.get_fields()}
        for attr in ("fields", "exclude"):
            value = getattr(cls, attr)
            if value is None:
                continue
            if isinstance(value, str):
                raise ImproperlyConfigured(
                    f"{cls.__qualname__}.{attr} must be a list of names, got {value!r}")
            unknown = [n for n in value if n != "__all__" and n not in names]
            if unknown:
                raise ImproperlyConfigured(
                    f"{cls.__qualname__}.{attr}: {model._meta.label} has no field(s) "
                    f"{', '.join(unknown)}")

    @classmethod
    def register(cls) -> None:
        """Connect this binding to its model's signals (idempotent)."""
        with _lock:
            if cls._registered:
                return
            cls.check_config()
            model = cls.model_class()
            for signal, receiver, name in cls._signals():
                signal.connect(receiver, sender=model, weak=False, dispatch_uid=cls._uid(name))
            cls._registered = True

    @classmethod
    def unregister(cls) -> None:
        """Disconnect this binding from its model's signals."""
        with _lock:
            if not cls._registered:
                return
            model = cls.model_class()
            for signal, _receiver, name in cls._signals():
                signal.disconnect(sender=model, dispatch_uid=cls._uid(name))
            cls._registered = False

    # -- which fields -------------------------------------------------------------

    def field_names(self) -> list[str]:
        """The names of the concrete fields this binding sends and accepts (no pk)."""
        opts = self.model_class()._meta
        concrete = [f.name for f in opts.get_fields()
                    if getattr(f, "concrete", False) and not f.auto_created
                    and not f.primary_key]
        wanted = list(self.fields) if self.fields is not None else ["__all__"]
        names = concrete if "__all__" in wanted else [n for n in wanted if n in concrete]
        excluded = set(self.exclude or ())
        return [n for n in names if n not in excluded]

    # -- outbound -----------------------------------------------------------------

    @classmethod
    def group_names(cls, instance: Any) -> Iterable[str]:
        """The groups that hear about ``instance`` (override; none by default)."""
        return []

    def serialize_data(self, instance: Any) -> dict[str, Any]:
        """The binding's fields of ``instance`` as JSON-able values."""
        names = self.field_names()
        text = serializers.serialize("json", [instance], fields=names)
        return json.loads(text)[0]["fields"]

    def serialize(self, instance: Any, action: str) -> dict[str, Any]:
        """The payload announcing ``action`` on ``instance``."""
        return {"action": action, "pk": instance.pk, "data": self.serialize_data(instance),
                "model": self.model_label()}

    def encode(self, stream: str | None, payload: dict[str, Any]) -> dict[str, Any]:
        """The message content a group receives for ``payload`` (the payload itself here)."""
        return payload

    def _groups(self, instance: Any) -> set[str]:
        return set(self.group_names(instance) or ())

    def _groups_in_db(self, instance: Any, using: str | None) -> set[str]:
        if instance.pk is None:
            return set()
        stored = (self.model_class()._base_manager.using(using)
                  .filter(pk=instance.pk).first())
        return set() if stored is None else self._groups(stored)

    def messages_for(self, instance: Any, action: str, before: set[str],
                     after: set[str]) -> list[tuple[str, dict[str, Any]]]:
        """``(group, content)`` pairs for a change: left groups hear ``delete``, joined ones
        ``create``, the others ``action`` itself (``update``)."""
        plan = [(DELETE, before - after), (CREATE, after - before)]
        if action == UPDATE:
            plan.append((UPDATE, before & after))
        out = []
        for verb, groups in plan:
            if not groups:
                continue
            content = self.encode(self.stream, self.serialize(instance, verb))
            out.extend((group, content) for group in sorted(groups))
        return out

    def send_change(self, instance: Any, action: str, before: set[str], after: set[str],
                    using: str | None = None) -> None:
        """Announce a change to the groups once the current transaction commits."""
        messages = self.messages_for(instance, action, before, after)
        if messages:
            transaction.on_commit(partial(deliver, self.channel_layer_alias, messages),
                                  using=using)

    @classmethod
    def _stash(cls, instance: Any, groups: set[str]) -> None:
        instance.__dict__.setdefault(_STASH, {})[cls] = groups

    @classmethod
    def _unstash(cls, instance: Any) -> set[str]:
        return instance.__dict__.get(_STASH, {}).pop(cls, set())

    @classmethod
    def _on_pre_save(cls, sender: Any, instance: Any, raw: bool = False,
                     using: str | None = None, **kwargs: Any) -> None:
        if not raw:
            cls._stash(instance, cls()._groups_in_db(instance, using))

    @classmethod
    def _on_post_save(cls, sender: Any, instance: Any, created: bool = False,
                      raw: bool = False, using: str | None = None, **kwargs: Any) -> None:
        if raw:
            return
        binding = cls()
        before = set() if created else cls._unstash(instance)
        binding.send_change(instance, CREATE if created else UPDATE, before,
                            binding._groups(instance), using)

    @classmethod
    def _on_pre_delete(cls, sender: Any, instance: Any, using: str | None = None,
                       **kwargs: Any) -> None:
        cls._stash(instance, cls()._groups(instance))

    @classmethod
    def _on_post_delete(cls, sender: Any, instance: Any, using: str | None = None,
                        **kwargs: Any) -> None:
        cls().send_change(instance, DELETE, cls._unstash(instance), set(), using)

    # -- inbound ------------------------------------------------------------------

    @classmethod
    def consumer(cls, message: Any, **kwargs: Any) -> Any:
        """A consumer applying ``{"action", "pk", "data"}`` messages (route a channel to it).

        ``message.user`` is who acts; without one it is loaded from the channel
        session when the message has a reply channel (``AnonymousUser`` otherwise).
        """
        if getattr(message, "user", None) is None and isinstance(
                message.get("reply_channel"), str):
            return channel_session_user(cls._consume)(message, **kwargs)
        return cls._consume(message, **kwargs)

    @classmethod
    def _consume(cls, message: Any, **kwargs: Any) -> Any:
        binding = cls()
        return binding.inbound(message, binding.deserialize(message), **kwargs)

    def deserialize(self, message: Any) -> Any:
        """The payload of an inbound message (here its content)."""
        return dict(message.content)

    def parse(self, payload: Any) -> tuple[str, Any, dict[str, Any]]:
        """``(action, pk, data)`` of a payload; ``BindingError`` if it is malformed."""
        if not isinstance(payload, dict):
            raise BindingError("the payload must be a JSON object")
        action, pk, data = payload.get("action"), payload.get("pk"), payload.get("data")
        if action not in ACTIONS:
            raise BindingError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        if action != CREATE and pk is None:
            raise BindingError(f"{action} needs a pk")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise BindingError("data must be a JSON object")
        if action != DELETE and not data:
            raise BindingError(f"{action} needs data")
        return action, pk, data

    def has_permission(self, user: Any, action: str, pk: Any) -> bool:
        """May ``user`` do ``action`` on the row ``pk``? By default: Django's model
        permissions (``app.add_model``, ``change``, ``delete``); override for more."""
        if user is None or not hasattr(user, "has_perm"):
            return False
        opts = self.model_class()._meta
        return bool(user.has_perm(f"{opts.app_label}.{PERMISSIONS[action]}_{opts.model_name}"))

    def inbound(self, message: Any, payload: Any, **kwargs: Any) -> Any:
        """Check and apply one payload; the created/updated instance, or ``None``."""
        self.message = message
        self.kwargs = kwargs
        self.user = getattr(message, "user", None)
        if self.user is None:
            from django.contrib.auth.models import AnonymousUser

            self.user = AnonymousUser()
        action = payload.get("action") if isinstance(payload, dict) else None
        pk = payload.get("pk") if isinstance(payload, dict) else None
        try:
            action, pk, data = self.parse(payload)
            if not self.has_permission(self.user, action, pk):
                self.refused(action, pk, "permission denied")
                return None
            with transaction.atomic():
                return self.run_action(action, pk, data)
        except BindingError as exc:
            self.refused(action, pk, str(exc), exc.errors)
        except ObjectDoesNotExist:
            self.refused(action, pk, f"no {self.model_label()} with pk {pk!r}")
        except ValidationError as exc:
            errors = exc.message_dict if hasattr(exc, "error_dict") else {
                "__all__": exc.messages}
            self.refused(action, pk, "invalid data", errors)
        return None

    def run_action(self, action: str, pk: Any, data: dict[str, Any]) -> Any:
        if action == CREATE:
            return self.create(data)
        if action == UPDATE:
            return self.update(pk, data)
        self.delete(pk)
        return None

    def hydrate(self, pk: Any, data: dict[str, Any]) -> Any:
        """A ``DeserializedObject`` of ``data`` (only this binding's fields)."""
        allowed = set(self.field_names())
        fields = {name: value for name, value in data.items() if name in allowed}
        try:
            objects = list(serializers.deserialize(
                "python", [{"model": self.model_label(), "pk": pk, "fields": fields}],
                ignorenonexistent=True))
        except (DeserializationError, FieldDoesNotExist, ValidationError, ValueError,
                TypeError) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, ValidationError) else exc
            raise BindingError(f"invalid data: {cause}") from None
        return objects[0]

    def _save(self, instance: Any, m2m: dict[str, Any]) -> Any:
        if self.validate:
            instance.full_clean()
        instance.save()
        for name, values in m2m.items():
            getattr(instance, name).set(values)
        return instance

    def create(self, data: dict[str, Any]) -> Any:
        """Make a row from ``data``."""
        hydrated = self.hydrate(None, data)
        return self._save(hydrated.object, hydrated.m2m_data or {})

    def update(self, pk: Any, data: dict[str, Any]) -> Any:
        """Change the fields of row ``pk`` that ``data`` names."""
        instance = self.model_class()._default_manager.get(pk=pk)
        hydrated = self.hydrate(pk, data)
        opts = instance._meta
        m2m = {}
        for name in set(data) & set(self.field_names()):
            if name in (hydrated.m2m_data or {}):
                m2m[name] = hydrated.m2m_data[name]
                continue
            attname = opts.get_field(name).attname
            setattr(instance, attname, getattr(hydrated.object, attname))
        return self._save(instance, m2m)

    def delete(self, pk: Any) -> None:
        """Delete row ``pk``."""
        self.model_class()._default_manager.get(pk=pk).delete()

    def refused(self, action: Any, pk: Any, reason: str,
                errors: dict[str, Any] | None = None) -> None:
        """An inbound payload changed nothing; tell the sender (here: log it)."""
        logger.info("%s: %s %s refused: %s", type(self).__qualname__, action, pk, reason)


def deliver(alias: str, messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Send ``(group, content)`` pairs now on ``alias``'s layer; errors are logged."""
    try:
        from worker.django.layers import get_channel_layer

        layer = get_channel_layer(alias).layer
        for group, content in messages:
            Group(group, layer).send(content, immediately=True)
    except Exception:  # a committed change must not fail because a notice could not go
        logger.exception("could not announce a model change to groups %s",
                         sorted({group for group, _ in messages}))


class BindingConsumer(JsonWebsocketConsumer):
    """The inbound side of a ``WebsocketBinding``: a stream consumer for the demultiplexer.

    Each JSON payload received is applied by a new instance of ``binding_class``;
    refusals are answered on the same stream (or socket, when routed alone).
    """

    binding_class: ClassVar[type[WebsocketBinding]]

    def session_decorator(self, message: Any) -> Any:
        if message.channel.name == formats.WEBSOCKET_RECEIVE:
            return channel_session_user
        return None

    def receive(self, content: Any = None, **kwargs: Any) -> None:
        binding = self.binding_class()
        binding.reply = self.send  # type: ignore[method-assign]
        binding.inbound(self.message, content, **kwargs)


class WebsocketBinding(Binding):
    """A binding for browsers: payloads ``{"action", "pk", "data", "model"}`` on ``stream``.

    Outbound group messages are demultiplexer text frames ``{"stream", "payload"}``;
    ``consumer`` is the stream's consumer class for ``WebsocketDemultiplexer.consumers``.
    """

    consumer: ClassVar[Any]  # type: ignore[assignment]
    reply: Callable[[Any], None] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        cls.consumer = type(f"{cls.__name__}Consumer", (BindingConsumer,),
                            {"binding_class": cls, "__module__": cls.__module__,
                             "__doc__": f"The inbound stream consumer of {cls.__qualname__}."})
        super().__init_subclass__(**kwargs)

    @classmethod
    def check_config(cls) -> None:
        super().check_config()
        if not cls.stream or not isinstance(cls.stream, str):
            raise ImproperlyConfigured(f"{cls.__qualname__} must set stream (a string)")

    def encode(self, stream: str | None, payload: dict[str, Any]) -> dict[str, Any]:
        return formats.validate_websocket_reply(WebsocketMultiplexer.encode(stream or "",
                                                                            payload))

    def refused(self, action: Any, pk: Any, reason: str,
                errors: dict[str, Any] | None = None) -> None:
        super().refused(action, pk, reason, errors)
        if self.reply is None:
            return
        answer: dict[str, Any] = {"action": action, "pk": pk, "model": self.model_label(),
                                  "error": reason}
        if errors:
            answer["errors"] = errors
        self.reply(answer)


class WebsocketBindingWithMembers(WebsocketBinding):
    """A ``WebsocketBinding`` that also sends ``send_members``: attributes or methods of
    the instance (dotted paths allowed), under their names in ``data``."""

    send_members: ClassVar[Sequence[str]] = ()

    def serialize_data(self, instance: Any) -> dict[str, Any]:
        data = super().serialize_data(instance)
        for name in self.send_members:
            value: Any = instance
            for part in name.split("."):
                value = getattr(value, part)
                if callable(value):
                    value = value()
            data[name] = json.loads(json.dumps(value, cls=serializers.json.DjangoJSONEncoder))
        return data


def recorded() -> list[type[Binding]]:
    """Every binding class with a model made so far."""
    with _lock:
        return list(_recorded)


def register_all() -> None:
    """Import every installed app's ``bindings`` module, then register the bindings made
    before the models were loaded (later ones registered themselves)."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("bindings")
    with _lock:
        pending = list(_pending)
        _pending.clear()
    for binding in pending:
        binding.register()
