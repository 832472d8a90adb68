from django.urls import path

from benchsite.views import hello

urlpatterns = [path("", hello)]
