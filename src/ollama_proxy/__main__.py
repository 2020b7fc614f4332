from ollama_proxy.cli import main

raise SystemExit(main())
