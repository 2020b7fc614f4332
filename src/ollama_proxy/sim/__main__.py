from ollama_proxy.sim.cli import main

raise SystemExit(main())
