from django.http import HttpResponse


def hello(request):
    return HttpResponse(b"hello", content_type="text/plain")
