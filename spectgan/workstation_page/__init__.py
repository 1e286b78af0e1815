"""The spectgan page: plain HTML, JavaScript and CSS in ``static/``, served by the MONAI Label app at ``/spectgan/``
(``monai_app.asgi``); no build step, nothing loaded from elsewhere."""
