"""``vllm-chatterbox serve``: an OpenAI-compatible speech server, as one FastAPI app.

Each module imports only those above it in this list:
settings, errors, metrics, encoding, voices (the store)  - plain parts
backend      the one door to the engine (ChatterboxTTS.astream, voice cloning)
admission    the queue bound: 429 + Retry-After, in-flight accounting
state        ServerState (on app.state): settings, metrics, voices, admission, backend and its loading
middleware   body limits, request counts          streaming  first chunk vs disconnect, audio and SSE bodies
dependencies FastAPI dependencies: state, API key, model and voice look-ups
routers/     one APIRouter per resource: speech, voices, service (health, models, metrics), demo
app          create_app(settings, load_backend): the app, runner-independent
run          run_server: the app under uvicorn
"""
