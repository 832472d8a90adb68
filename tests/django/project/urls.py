"""The test project's URLconf."""

from django.contrib import admin
from django.urls import path

from tests.django.project import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("plain/", views.plain),
    path("json/", views.json_view),
    path("redirect/", views.redirect_view),
    path("error/", views.error),
    path("cookies/", views.cookies),
    path("stream/", views.stream),
    path("upload/", views.upload),
    path("file/", views.file_view),
    path("meta/", views.meta),
    path("session/", views.session_counter),
    path("whoami/", views.whoami),
    path("form/", views.form),
    path("where/", views.where),
]
