"""Swagger UI at /api-docs, its assets served by the app itself (no CDN, works offline), under a CSP.

The original app's addresses keep working too: the UI at /api-docs/index.html, and the OpenAPI document as
YAML at /api-docs/v1/swagger.yaml (the same document /openapi.json serves).
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

import yaml
from fastapi import FastAPI, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

# Swagger UI 5, which reads OpenAPI 3.1 (the version FastAPI writes), shipped as a package of its own.
SWAGGER_UI_FILES = resources.files("fastapi_swagger.resources")
DOCS_PATH = "/api-docs"
DOCS_ASSETS = f"{DOCS_PATH}/assets"
# Where the original app served its Swagger UI and its document.
LEGACY_DOCS_PATH = f"{DOCS_PATH}/index.html"
LEGACY_YAML_PATH = f"{DOCS_PATH}/v1/swagger.yaml"
# libyaml's emitter when PyYAML was built with it: the document is large, and the pure-Python one is slow.
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _script_hashes(html: str) -> list[str]:
    """CSP sources allowing exactly the page's inline scripts (the call that starts Swagger UI)."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    ]


def content_security_policy(html: str) -> str:
    """Everything from this origin, the page's own inline script by hash, and nothing else: no other site's
    scripts, no framing. Swagger UI sets inline styles and draws icons from data: URLs."""
    directives = {
        "default-src": "'none'",
        "script-src": " ".join(["'self'", *_script_hashes(html)]),
        "style-src": "'self' 'unsafe-inline'",
        "img-src": "'self' data:",
        "font-src": "'self'",
        "connect-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def mount_docs(app: FastAPI) -> None:
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(SWAGGER_UI_FILES)), name="swagger-ui-assets")
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Goodnight API",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
    )
    html = bytes(page.body).decode()
    policy = content_security_policy(html)

    @app.get(DOCS_PATH, include_in_schema=False)
    @app.get(LEGACY_DOCS_PATH, include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": policy})

    @cache
    def openapi_yaml() -> bytes:
        # Built on first request, like /openapi.json: by then every route is registered.
        document = yaml.dump(app.openapi(), Dumper=_YAML_DUMPER, sort_keys=False, allow_unicode=True)
        return document.encode()

    @app.get(LEGACY_YAML_PATH, include_in_schema=False)
    async def swagger_yaml() -> Response:
        return Response(openapi_yaml(), media_type="application/yaml")
