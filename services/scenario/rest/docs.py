"""The REST API's Swagger UI page, with its script, stylesheet and favicon served by the product.

FastAPI's own docs page loads Swagger UI from a public CDN, so in a lab without internet it stays blank;
here the assets come from the `fastapi-offline` package (Swagger UI's dist files) and the page makes no
request outside the host that serves it.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

DOCS_URL = "/swagger/"
ASSETS_URL = "/swagger/assets"
# The files of the package's static/ folder that the page loads, and their media types.
SWAGGER_JS, SWAGGER_CSS, FAVICON = "swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"
ASSETS = {SWAGGER_JS: "text/javascript", SWAGGER_CSS: "text/css", FAVICON: "image/png"}


def mount_docs(app: FastAPI, openapi_url: str) -> None:
    """Serve Swagger UI at /swagger/ (/swagger redirects there) and its assets under /swagger/assets/."""
    static = Path(fastapi_offline.__file__).parent / "static"

    # One route for the few files the page needs (not the package's whole folder), so that the
    # request metrics have a route to name.
    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    async def swagger_asset(name: str) -> Response:
        media_type = ASSETS.get(name)
        if media_type is None:
            return PlainTextResponse("Not Found", status_code=404)
        return FileResponse(static / name, media_type=media_type)

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_page(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{ASSETS_URL}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{root}{ASSETS_URL}/{FAVICON}",
            # Swagger UI would show a badge fetched from its public validator whenever the page is
            # opened by a name other than localhost; offline that is a broken image and a request out.
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )
