"""The config file `install-service` starts a user with: valid as written, the common changes commented."""

CONFIG_SKELETON = """\
# ollama-proxy configuration, written by `ollama-proxy install-service` (which never overwrites it).
# After an edit: systemctl --user reload ie.fio.ollamaproxy.service
# (new requests use it at once; `server` and `system` settings need `systemctl --user restart`).
# Every key is optional and a key left out keeps its default: the README's "Configuration reference"
# lists them all. A typo is refused with a message naming it, and the running configuration stays.

server:
  host: 127.0.0.1          # 0.0.0.0 listens on every interface: set api_keys first
  http_port: 11435
  # api_keys: ["a-long-random-string"]   # clients then send "Authorization: Bearer <key>"
  # shutdown_grace_s: 30                 # on stop, how long requests in flight may finish

router:
  default_mode: balanced   # performance | balanced | efficiency | quiet | auto | ultra-efficiency
  # default_backend: local # with several backends: where pull, push, create, copy, delete go

desktop:
  dbus: auto               # auto | on | off: the D-Bus front the GNOME "AI Efficiency" toggle talks to
  notifications: true      # a desktop notification when auto mode switches or the machine gets hot

backends:
  - id: local
    endpoint: "http://127.0.0.1:11434"   # the Ollama on this machine
  # - id: gpu-box
  #   endpoint: "http://gpu-box:11434"
  #   hardware: nvidia                   # npu | igpu | nvidia | cpu | other
  #   characteristics: {power_watts: 55, priority: 2, max_concurrent: 8}
  # - id: llamacpp
  #   type: openai                       # an OpenAI-compatible server (llama.cpp, vLLM, LM Studio)
  #   endpoint: "http://127.0.0.1:8080"
"""
