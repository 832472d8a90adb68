from django.contrib import admin
from django.urls import path

from benchsite.views import hello

urlpatterns = [
    path("", hello),
    path("admin/", admin.site.urls),
]
