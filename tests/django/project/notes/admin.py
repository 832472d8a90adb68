from django.contrib import admin

from tests.django.project.notes.models import Note

admin.site.register(Note)
