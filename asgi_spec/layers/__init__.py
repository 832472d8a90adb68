"""Channel-layer backends: ``memory``, ``sqlite`` (the embedded default) and ``redis``.

Import them lazily through ``asgi_spec.layer_from_url``; each module imports
only what its backend needs.
"""
