"""One APIRouter per resource; :func:`vllm_chatterbox.server.app.create_app` includes them."""
