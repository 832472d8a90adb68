"""Views of the test project: one of each kind of response the bridge must carry."""

from __future__ import annotations

import hashlib
import io

from django.http import (
    FileResponse,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect
from django.views.decorators.csrf import csrf_exempt

#: Bigger than the bridge's 256 KiB reply chunks, so it takes several.
BIG_FILE = bytes(range(256)) * 3000  # 768,000 bytes


def plain(request):
    return HttpResponse("hello world", content_type="text/plain")


def json_view(request):
    return JsonResponse({"numbers": [1, 2, 3], "q": request.GET.get("q"), "ok": True})


def redirect_view(request):
    return redirect("/plain/")


def error(request):
    raise ValueError("this view always fails")


def cookies(request):
    response = HttpResponse("cookies set")
    response.set_cookie("flavour", "oatmeal", max_age=3600, httponly=True)
    response.set_cookie("colour", "blue", samesite="Lax")
    response["X-Custom"] = "yes"
    return response


def stream(request):
    return StreamingHttpResponse((f"line {n}\n".encode() for n in range(5)),
                                 content_type="text/plain")


@csrf_exempt
def upload(request):
    files = {name: {"name": f.name, "size": f.size,
                    "sha256": hashlib.sha256(f.read()).hexdigest()}
             for name, f in request.FILES.items()}
    return JsonResponse({"method": request.method, "fields": request.POST.dict(),
                         "files": files})


def file_view(request):
    return FileResponse(io.BytesIO(BIG_FILE), content_type="application/octet-stream")


@csrf_exempt
def meta(request):
    keys = ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
            "REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT", "HTTP_X_TEST",
            "HTTP_HOST", "SERVER_PROTOCOL", "REQUEST_METHOD")
    return JsonResponse({
        "meta": {k: request.META.get(k) for k in keys},
        "scheme": request.META["wsgi.url_scheme"],
        "path": request.path, "path_info": request.path_info,
        "is_secure": request.is_secure(), "uri": request.build_absolute_uri(),
        "get": request.GET.dict(), "body": request.body.decode("latin-1"),
    })


def session_counter(request):
    request.session["count"] = request.session.get("count", 0) + 1
    return JsonResponse({"count": request.session["count"]})


def whoami(request):
    return JsonResponse({"user": request.user.get_username() or None})


def form(request):
    if request.method == "POST":
        return HttpResponse(f"posted {request.POST.get('name', '')}")
    return HttpResponse("form")


def where(request):
    from django.urls import reverse

    return JsonResponse({"plain": reverse(plain)})
