"""The chat project's pages (Django views, served through the workers)."""

from chat import views
from django.urls import path

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", views.healthz, name="healthz"),
    path("rooms/", views.enter, name="enter"),
    path("rooms/<slug:slug>/", views.room, name="room"),
    path("rooms/<slug:slug>/longpoll/", views.room_longpoll, name="room-longpoll"),
    path("rooms/<slug:slug>/stream/", views.stream, name="stream"),
    path("rooms/<slug:slug>/messages/", views.messages, name="messages"),
]
