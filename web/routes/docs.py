"""GET /openapi.json (web.openapi) and GET /docs: Swagger UI served from the swagger-ui-bundle
package's files, so the docs work with no internet. Must not import torch.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, send_from_directory, url_for
from werkzeug.exceptions import NotFound

from autodep_celery.web import openapi, routes
from autodep_celery.web.openapi import operation
from autodep_celery.web.responses import json_response
from autodep_celery.web.spec import AnyValue

bp = Blueprint("docs", __name__)

ASSETS = frozenset(
    {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "favicon-32x32.png",
        "favicon-16x16.png",
    }
)
"""The files of Swagger UI the page loads; nothing else of the package is served."""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>autodep-celery API</title>
  <link rel="stylesheet" type="text/css" href="{css}">
  <link rel="icon" type="image/png" href="{icon}" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{bundle}" charset="UTF-8"></script>
  <script src="{preset}" charset="UTF-8"></script>
  <script>
    window.onload = function () {{
      window.ui = SwaggerUIBundle({{
        url: "{spec}",
        dom_id: "#swagger-ui",
        deepLinking: true,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        layout: "StandaloneLayout"
      }});
    }};
  </script>
</body>
</html>
"""


@bp.get("/openapi.json")
@operation(
    "This API's OpenAPI 3.0 document",
    {200: AnyValue(description="OpenAPI document")},
    tag="docs",
)
def openapi_json() -> Response:
    state = current_app.extensions[routes.EXTENSION]
    if "openapi" not in state:  # the app's routes are fixed once it serves
        state["openapi"] = openapi.document(current_app, routes.settings())
    return json_response(state["openapi"])


@bp.get("/docs")
@operation("Swagger UI for this API", {200: ("text/html", "Swagger UI page")}, tag="docs")
def swagger_ui() -> Response:
    def asset(name: str) -> str:
        return url_for("docs.asset", name=name)

    page = _PAGE.format(
        css=asset("swagger-ui.css"),
        icon=asset("favicon-32x32.png"),
        bundle=asset("swagger-ui-bundle.js"),
        preset=asset("swagger-ui-standalone-preset.js"),
        spec=url_for("docs.openapi_json"),
    )
    return Response(page, mimetype="text/html")


@bp.get("/docs/<name>")
@operation(
    "A static file of Swagger UI",
    {200: ("application/octet-stream", "JavaScript, CSS or icon")},
    tag="docs",
    errors=(404,),
)
def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound()
    from swagger_ui_bundle import swagger_ui_path  # only when the docs are opened

    return send_from_directory(str(swagger_ui_path), name, max_age=3600)
