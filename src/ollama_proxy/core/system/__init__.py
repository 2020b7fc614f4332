"""The machine's state as values: sensor and battery readings, thermal judgement per backend, and
what the `auto` efficiency mode resolves to (with hysteresis and dwell). Pure: readings come in from
`adapters/sysfs`, decisions go out to the router."""
